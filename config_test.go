package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

// TestExampleConfigsRunSeparately parses the shipped example configs and
// runs a cloud and an edge from them as separate parts, on free ports.
func TestExampleConfigsRunSeparately(t *testing.T) {
	dir := t.TempDir()
	ccfg, err := cloud.LoadConfig("examples/cloud.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var users []web.User
	for _, u := range ccfg.Users {
		users = append(users, web.User{Username: u.Username, PasswordHash: u.PasswordHash, Role: u.Role})
	}
	app, err := startCloudApp(context.Background(), cloud.Options{
		DataDir: filepath.Join(dir, "cloud"), HostID: ccfg.HostID,
		MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", Users: ccfg.MQTTUsers()},
	}, users, web.Options{Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.shutdown(context.Background()) })

	ecfg, err := edge.LoadConfig("examples/edge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ecfg.DataDir = filepath.Join(dir, "edge")
	ecfg.MQTT.Listen = "127.0.0.1:0" // the example's fixed port may be taken
	ecfg.Cloud.Broker = "tcp://" + app.cloud.Broker.Addr()
	opts, err := ecfg.Options(nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	edgetest.Start(t, opts)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		n, err := app.cloud.Historian.Count(context.Background(), "limeworks/ghent/kilns/line1/kiln1/o2")
		if err == nil && n == 0 {
			err = fmt.Errorf("no values yet")
		}
		return err
	})
	c := &webtest.Client{T: t, Base: "http://" + app.web.Addr()}
	code, out := c.Do("POST", "/api/v1/login", map[string]string{"username": "admin", "password": "change-me-admin"})
	if code != 200 {
		t.Fatalf("login with the example admin: %d %v", code, out)
	}
	c.Token = out["token"].(string)
	if code, ns := c.Do("GET", "/api/v1/namespace?prefix=limeworks/ghent", nil); code != 200 || ns["count"].(float64) < 12 {
		t.Fatalf("namespace: %d %v", code, ns["count"])
	}
}

// edgeOptions loads an edge config and builds its options, connectors included.
func edgeOptions(f string) error {
	c, err := edge.LoadConfig(f)
	if err != nil {
		return err
	}
	_, err = c.Options(nil, "")
	return err
}

// cloudWithSSO loads a cloud config and its single sign-on settings.
func cloudWithSSO(f string) error {
	c, err := cloud.LoadConfig(f)
	if err == nil {
		_, err = oidcOptions(f, c.HTTP.OIDC)
	}
	return err
}

func TestBrokenConfigsNameFileLineAndKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, body string
		load       func(string) error
		want       []string
	}{
		{"cloud unknown key", "data_dir: x\nmqtt:\n  listn: 1.2.3.4:1883\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{":3:", "listn", "unknown key"}},
		{"cloud bad duration", "sync_interval: soon\nedges: []\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{":1:", "soon", "duration"}},
		{"cloud bad filter", "mqtt_users:\n  - {username: u, password_hash: '$2a$10$AJjvohQPySb.OvxfiH5NNeTDG7gi9CoDlSaf.uoz3XH71QnO1UoGq', subscribe: ['a/#/b']}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"user u", "'#' must be the last level"}},
		{"cloud bad hash", "edges:\n  - username: a\n    password_hash: plain\n    group: g\n    edge_id: e\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"bcrypt"}},
		{"cloud bad release key", "edges: []\nupdates:\n  public_key: calx-release-ed25519:AAAA\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{":3:", "public_key", "32 bytes"}},
		{"edge release key of another kind", "data_dir: x\nupdates:\n  health_window: 1m\n  public_key: calx-release-ed25519-private:AAAA\n",
			func(f string) error { _, err := edge.LoadConfig(f); return err },
			[]string{":4:", "public_key", "want \"calx-release-ed25519:\""}},
		{"cloud sink without a far end", "sinks:\n  - name: warehouse\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"sinks[0]", "postgres"}},
		{"cloud sink with a bad schema", "sinks:\n  - name: warehouse\n    postgres: {url: 'postgres://calx@db/plant', schema: Plant-Data}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"sinks[0]", "schema \"Plant-Data\""}},
		{"cloud sink password file missing", "sinks:\n  - name: warehouse\n    postgres: {url: 'postgres://calx@db/plant', password_file: /nonexistent/pw}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"sinks[0]", "password_file", "/nonexistent/pw"}},
		{"cloud bad limit", "mqtt:\n  limits: {max_packet_size: 1GiB}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"mqtt.limits.max_packet_size", "256MiB"}},
		{"cloud nats port without users", "nats: 127.0.0.1:4222\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"nats", "needs users"}},
		{"cloud nats plain password", "nats:\n  listen: 127.0.0.1:4222\n  users: [{username: a, password_hash: plain}]\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"nats.users[0]", "bcrypt"}},
		{"cloud bad user scope", "users:\n  - {username: v, password_hash: '$2a$10$AJjvohQPySb.OvxfiH5NNeTDG7gi9CoDlSaf.uoz3XH71QnO1UoGq', role: viewer, scope: ['limeworks/+/kilns']}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"users[0].scope[0]", "invalid UNS path"}},
		{"cloud sso group with a bad role", "http:\n  oidc:\n    issuer: https://login.example\n    client_id: calx\n    groups:\n      - {group: ops, role: boss}\n",
			cloudWithSSO,
			[]string{"http.oidc", "groups[0] (ops)", `role "boss"`}},
		{"cloud sso secret file missing", "http:\n  oidc:\n    issuer: https://login.example\n    client_id: calx\n    client_secret_file: /nonexistent/secret\n    groups: [{group: ops, role: viewer}]\n",
			cloudWithSSO,
			[]string{"http.oidc", "client_secret_file", "/nonexistent/secret"}},
		{"cloud historian memory too small", "historian: {memory_limit: 1MiB}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"historian.memory_limit", "64MiB"}},
		{"cloud negative mcp rate", "http: {mcp: {rate: -1}}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"http.mcp", "not negative"}},
		{"cloud mcp writes for viewers", "http: {mcp: {writes: [engineer, viewer]}}\n",
			func(f string) error { _, err := cloud.LoadConfig(f); return err },
			[]string{"http.mcp.writes", `role "viewer"`, "operator, engineer or admin"}},
		{"edge unknown mqtt key", "mqtt:\n  listen: 127.0.0.1:1884\n  allow_anonymus: true\n",
			func(f string) error { _, err := edge.LoadConfig(f); return err },
			[]string{":3:", "allow_anonymus", "unknown key"}},
		{"edge bad mqtt limit", "cloud: {broker: 'tcp://x:1', username: a, password: b, group: g, edge_id: e}\nmqtt: {listen: ':1884', limits: {max_connections: -1}}\n",
			edgeOptions,
			[]string{"mqtt.limits.max_connections"}},
		{"edge unknown key", "cloud:\n  broker: tcp://x:1\n  usernme: a\n",
			func(f string) error { _, err := edge.LoadConfig(f); return err },
			[]string{":3:", "usernme", "unknown key"}},
		{"edge unknown connector", "cloud: {broker: 'tcp://x:1', username: a, password: b, group: g, edge_id: e}\ndevices:\n  - {id: d, path: a/b/c, connector: plc5}\n",
			edgeOptions,
			[]string{"devices[0].connector", "plc5"}},
		{"edge bad sim setting", "cloud: {broker: 'tcp://x:1', username: a, password: b, group: g, edge_id: e}\ndevices:\n  - id: d\n    path: a/b/c\n    connector: sim\n    settings:\n      intervall: 1s\n",
			edgeOptions,
			[]string{"devices[0].settings", "line 7", "intervall"}},
		{"edge bad path", "cloud: {broker: 'tcp://x:1', username: a, password: b, group: g, edge_id: e}\ndevices:\n  - {id: d, path: 'a/+/c', connector: sim}\n",
			edgeOptions,
			[]string{"devices[0] path", "wildcard"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := write(strings.ReplaceAll(tc.name, " ", "_")+".yaml", tc.body)
			err := tc.load(f)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range append([]string{f}, tc.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

// The published example passwords are known, and every hash in the
// example cloud config is one of them: calx cloud warns of each account
// that still has one.
func TestExamplePasswordsKnown(t *testing.T) {
	cfg, err := cloud.LoadConfig("examples/cloud.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := exampleCloudAccounts(cfg)
	want := []string{"user admin", "mqtt ghent-edge", "mqtt scada-reader"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("example accounts %v, want %v", got, want)
	}
	for i, h := range exampleHashes {
		if bcrypt.CompareHashAndPassword([]byte(h), []byte(examplePasswords[i])) != nil {
			t.Errorf("hash %d is not of %q", i, examplePasswords[i])
		}
	}
	ecfg, err := edge.LoadConfig("examples/edge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := exampleEdgeAccounts(ecfg, ecfg.Cloud.Password); len(got) != 1 {
		t.Fatalf("example edge: %v", got)
	}
	var out strings.Builder
	warnExamples(slog.New(slog.DiscardHandler), &out, got)
	if !strings.Contains(out.String(), "WARNING") || !strings.Contains(out.String(), "ghent-edge") {
		t.Fatalf("warning: %q", out.String())
	}
}

// TestTLSSelfSigned: --tls-self-signed gives every listener without a
// certificate the trial CA's (made in the data dir and kept), says where
// the CA is with its fingerprint, and an edge that trusts that CA file
// reaches the broker over TLS and a browser the UI over HTTPS.
func TestTLSSelfSigned(t *testing.T) {
	cfg, err := cloud.LoadConfig("examples/cloud.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(t.TempDir(), "cloud")
	var out bytes.Buffer
	if err := selfSignedTLS(cfg, "calx.plant.example", &out); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(cfg.DataDir, "tls", "ca.crt")
	if !strings.Contains(out.String(), caFile) || !strings.Contains(out.String(), "SHA-256 fingerprint") {
		t.Fatalf("output: %s", out.String())
	}
	mqttTLS, err := cfg.MQTT.TLS.Load()
	if err != nil || mqttTLS == nil {
		t.Fatalf("mqtt tls: %v", err)
	}
	httpTLS, err := cfg.HTTP.TLS.Load()
	if err != nil || httpTLS == nil {
		t.Fatalf("http tls: %v", err)
	}
	var users []web.User
	for _, u := range cfg.Users {
		users = append(users, web.User{Username: u.Username, PasswordHash: u.PasswordHash, Role: u.Role})
	}
	app, err := startCloudApp(context.Background(), cloud.Options{DataDir: cfg.DataDir,
		MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", TLS: mqttTLS, Users: cfg.MQTTUsers()}}, users, web.Options{Listen: "127.0.0.1:0", TLS: httpTLS}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.shutdown(context.Background()) })
	pem, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	_, port, _ := net.SplitHostPort(app.web.Addr())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	res, err := client.Get("https://localhost:" + port + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS with the trial CA: %v", err)
	}
	res.Body.Close()

	ecfg, err := edge.LoadConfig("examples/edge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ecfg.DataDir = filepath.Join(t.TempDir(), "edge")
	ecfg.MQTT.Listen = "127.0.0.1:0"
	_, mport, _ := net.SplitHostPort(app.cloud.Broker.Addr())
	ecfg.Cloud.Broker, ecfg.Cloud.CAFile = "mqtts://localhost:"+mport, caFile
	opts, err := ecfg.Options(nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	e := edgetest.Start(t, opts)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !e.Online() {
			return fmt.Errorf("the edge is not born over TLS")
		}
		return nil
	})
}
