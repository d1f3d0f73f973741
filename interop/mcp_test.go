package interop_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web/webtest"
)

// needMCPClient returns the node binary when the MCP TypeScript SDK is
// installed under interop/mcp (make test does it).
func needMCPClient(t *testing.T) string {
	t.Helper()
	return needNode(t, "the MCP TypeScript SDK", filepath.Join("mcp", "node_modules", "@modelcontextprotocol", "sdk"))
}

// mcpAnswer is what interop/mcp/client.js prints.
type mcpAnswer struct {
	Tools   []string `json:"tools"`
	Answers map[string]struct {
		IsError bool   `json:"isError"`
		Text    string `json:"text"`
	} `json:"answers"`
}

// TestMCPTypeScriptClient: the MCP TypeScript SDK's client, an
// implementation independent of the Go SDK the server is built on, lists
// Calx's tools and calls three, over Streamable HTTP and through calx mcp
// on stdio; each answer is the REST API's.
func TestMCPTypeScriptClient(t *testing.T) {
	node := needMCPClient(t)
	app := webtest.Start(t, cloud.Options{})
	tag := uns.Tag{Path: "limeworks/ghent/kilns/line1/kiln1/burning_zone_temp", DataType: uns.TypeFloat64, Unit: "°C"}
	app.Cloud.Registry.Define(tag)
	app.Cloud.Registry.Update([]uns.Sample{{Path: tag.Path, TS: time.Now(), Value: uns.Float(1104.5), Quality: uns.Good}})
	admin := app.Admin()
	dir := t.TempDir()
	calx := filepath.Join(dir, "calx")
	build := exec.Command("go", "build", "-o", calx, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(admin.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tools := []string{"list_sites", "fleet_health", "latest_values"}
	routes := map[string]string{"list_sites": "/api/v1/sites", "fleet_health": "/api/v1/edges", "latest_values": "/api/v1/latest"}
	for mode, args := range map[string][]string{
		"http":  {"http", app.Base + "/mcp", admin.Token},
		"stdio": {"stdio", calx, app.Base + "/mcp", tokenFile},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, node, append(append([]string{filepath.Join("mcp", "client.js")}, args...), tools...)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("%s: the TypeScript client: %v\n%s", mode, err, out)
		}
		var a mcpAnswer
		if err := json.Unmarshal(out, &a); err != nil {
			t.Fatalf("%s: %v: %s", mode, err, out)
		}
		if len(a.Tools) < 10 || !slices.Contains(a.Tools, "history") {
			t.Errorf("%s: tools %v", mode, a.Tools)
		}
		for _, tool := range tools {
			got := a.Answers[tool]
			if got.IsError {
				t.Errorf("%s: %s: tool error %s", mode, tool, got.Text)
				continue
			}
			_, rest := admin.Text("GET", routes[tool], "", "")
			var g, w any
			json.Unmarshal([]byte(got.Text), &g)
			json.Unmarshal([]byte(rest), &w)
			if g == nil || !reflect.DeepEqual(g, w) {
				t.Errorf("%s: %s answers %s, the API %s", mode, tool, got.Text, rest)
			}
		}
	}
}
