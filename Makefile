# Calx build. `make demo` runs the product, `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
VENDOR  := web/static/vendor/uPlot.iife.min.js web/static/vendor/uPlot.min.css

.PHONY: all build demo test vet fuzz bench clean web interop

all: build

# Front-end libraries come from npm (web/package.json and its lock file) and
# are copied next to the embedded assets; they are never committed.
web: $(VENDOR)

$(VENDOR): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p web/static/vendor
	cp web/node_modules/uplot/dist/uPlot.iife.min.js web/node_modules/uplot/dist/uPlot.min.css web/static/vendor/

# Third-party peers of the interop tests: Eclipse Tahu's Sparkplug libraries,
# node-opcua's server for the OPC UA connector's security tests, and the MCP
# TypeScript SDK's client for the MCP endpoint's.
interop: interop/tahu/node_modules/.package-lock.json interop/opcua/node_modules/.package-lock.json interop/mcp/node_modules/.package-lock.json

interop/tahu/node_modules/.package-lock.json: interop/tahu/package.json interop/tahu/package-lock.json
	cd interop/tahu && npm ci --no-audit --no-fund --loglevel=error

interop/opcua/node_modules/.package-lock.json: interop/opcua/package.json interop/opcua/package-lock.json
	cd interop/opcua && npm ci --no-audit --no-fund --loglevel=error

interop/mcp/node_modules/.package-lock.json: interop/mcp/package.json interop/mcp/package-lock.json
	cd interop/mcp && npm ci --no-audit --no-fund --loglevel=error

build: web
	$(GO) build -ldflags "$(LDFLAGS)" -o calx .

demo: build
	./calx demo

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | grep -v node_modules)" || (echo "gofmt needed:"; gofmt -l . | grep -v node_modules; exit 1)

# Packages run one after the other: the fault tests run whole cloud and edge
# processes, and the other end-to-end tests are not to share the two cores
# with them.
# The tests, then every benchmark once at a small size (-short): a smoke
# check of its steps, no timing.
test: web interop vet
	$(GO) test -count=1 -p 1 -timeout 10m ./...
	$(GO) test -count=1 -p 1 -timeout 10m -short -run '^$$' -bench . -benchtime 1x ./...

# Run each fuzz target for a while (FUZZTIME=1m make fuzz).
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./uns -run '^$$' -fuzz FuzzDecodeBatch -fuzztime $(FUZZTIME)
	$(GO) test ./uns/sparkplug -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./uns/sparkplug -run '^$$' -fuzz '^FuzzDecodeFast$$' -fuzztime $(FUZZTIME)
	$(GO) test ./uns/sparkplug -run '^$$' -fuzz '^FuzzParseTopic$$' -fuzztime $(FUZZTIME)
	$(GO) test ./uns/sparkplug -run '^$$' -fuzz '^FuzzAppendData$$' -fuzztime $(FUZZTIME)
	$(GO) test ./web -run '^$$' -fuzz '^FuzzMCPArguments$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./uns/... ./store/...

clean:
	rm -rf calx web/static/vendor web/node_modules interop/tahu/node_modules interop/opcua/node_modules interop/mcp/node_modules
