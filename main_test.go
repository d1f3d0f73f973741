package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/web/webtest"
)

// checkFor polls until a condition holds.
var checkFor = edgetest.CheckFor

// startTestDemo runs the demo wiring on free ports in dir.
func startTestDemo(t *testing.T, dir string) *demo {
	t.Helper()
	t.Setenv("CALX_ADMIN_PASSWORD", "test-admin-pw")
	d, err := startDemo(context.Background(), demoOptions{HTTP: "127.0.0.1:0", MQTT: "127.0.0.1:0", DataDir: dir, SimInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Shutdown is safe to call twice, so a test may stop the demo itself.
	t.Cleanup(func() { d.shutdown(context.Background()) })
	return d
}

// login signs in to the API at base as the admin.
func login(t *testing.T, base string) *webtest.Client {
	return webtest.Login(t, base, "admin", webtest.AdminPassword)
}

const lifePath = "limeworks/ghent/kilns/line1/kiln1/plc_life_counter"

// TestDemoEndToEnd sends simulated kiln values through the real path
// (connector, edge, Sparkplug over MQTT, broker, JetStream, host, historian)
// and reads them back through the API.
func TestDemoEndToEnd(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	d := startTestDemo(t, dir)
	base := "http://" + d.app.web.Addr()

	// The life counter steps by one per read: every step must arrive, in order.
	var firstSeen time.Duration
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		n, err := d.app.cloud.Historian.Count(context.Background(), lifePath)
		if err != nil {
			return err
		}
		if n > 0 && firstSeen == 0 {
			firstSeen = time.Since(start)
		}
		if n < 100 {
			return fmt.Errorf("%d values stored", n)
		}
		return nil
	})
	t.Logf("first value in the historian %s after start", firstSeen)
	pts, err := d.app.cloud.Historian.History(context.Background(), lifePath, start.Add(-time.Minute), time.Now().Add(time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Value.I != pts[i-1].Value.I+1 {
			t.Fatalf("life counter not consecutive at %d: %d then %d", i, pts[i-1].Value.I, pts[i].Value.I)
		}
		if !pts[i].TS.After(pts[i-1].TS) {
			t.Fatalf("timestamps not increasing at %d", i)
		}
	}
	if pts[0].Value.I != 1 {
		t.Fatalf("first stored life counter = %d, want 1", pts[0].Value.I)
	}

	// HTTP API.
	anon := &webtest.Client{T: t, Base: base}
	if code, out := anon.Do("GET", "/api/v1/namespace", nil); code != 401 || out["error"] == nil {
		t.Fatalf("namespace without token: %d %v", code, out)
	}
	if code, _ := anon.Do("POST", "/api/v1/login", map[string]string{"username": "admin", "password": "wrong"}); code != 401 {
		t.Fatalf("login with a wrong password: %d", code)
	}
	if code, out := anon.Do("GET", "/healthz", nil); code != 200 || out["status"] != "ok" {
		t.Fatalf("healthz: %d %v", code, out)
	}
	if code, _ := anon.Do("GET", "/readyz", nil); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
	c := login(t, base)
	code, ns := c.Do("GET", "/api/v1/namespace", nil)
	if code != 200 {
		t.Fatalf("namespace: %d %v", code, ns)
	}
	tags := ns["tags"].([]any)
	var found map[string]any
	sites := map[string]bool{}
	for _, x := range tags {
		tag := x.(map[string]any)
		segs := strings.Split(tag["path"].(string), "/")
		sites[segs[1]] = true
		if tag["path"] == "limeworks/lyon/kilns/line1/kiln1/o2" {
			found = tag
		}
	}
	if !sites["ghent"] || !sites["lyon"] {
		t.Fatalf("sites in namespace: %v", sites)
	}
	if found == nil {
		t.Fatal("lyon kiln1 o2 not in the namespace")
	}
	sp := found["sparkplug"].(map[string]any)
	if sp["group"] != "limeworks" || sp["edge_node"] != "lyon-edge" || sp["device"] != "kiln1" || sp["metric"] != "o2" {
		t.Fatalf("sparkplug address = %v", sp)
	}
	if found["unit"] != "%" || found["datatype"] != "float64" || found["quality"] != "good" || found["value"] == nil {
		t.Fatalf("o2 tag = %v", found)
	}
	// Each edge reports its devices' connections as tags of its own.
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		tag, ok := d.app.cloud.Registry.Get("limeworks/_edge/lyon-edge/Connections/kiln1/Connected")
		if !ok || tag.Value.Any() != int64(1) && tag.Value.Any() != true {
			return fmt.Errorf("connection status tag: %+v %v", tag.Value, ok)
		}
		return nil
	})

	// The demo's fleet config has a calculated tag; the cloud computes it.
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		tag, ok := d.app.cloud.Registry.Get("limeworks/ghent/kilns/line1/kiln1/specific_drive_energy")
		if !ok || !tag.HasVal || tag.Unit != "kWh/t" {
			return fmt.Errorf("calculated tag: %+v %v", tag, ok)
		}
		return nil
	})

	q := url.Values{"path": {lifePath}, "from": {start.Add(-time.Minute).UTC().Format(time.RFC3339Nano)}}
	code, hist := c.Do("GET", "/api/v1/history?"+q.Encode(), nil)
	if code != 200 || hist["count"].(float64) < 100 {
		t.Fatalf("history: %d count=%v", code, hist["count"])
	}
	for _, bad := range []struct{ query, want string }{
		{"", "path"},
		{"path=a/%2B/b", "path"},
		{"path=" + lifePath + "&from=yesterday", "from"},
		{"path=" + lifePath + "&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"},
		{"path=" + lifePath + "&limit=0", "limit"},
	} {
		code, out := c.Do("GET", "/api/v1/history?"+bad.query, nil)
		msg, _ := out["error"].(string)
		if code != 400 || !strings.HasPrefix(msg, bad.want) {
			t.Errorf("history?%s: %d %q, want 400 naming %s", bad.query, code, msg, bad.want)
		}
	}
	if code, _ := c.Do("GET", "/api/v1/history?path=limeworks/no/such/tag", nil); code != 404 {
		t.Errorf("history of an unknown tag: %d, want 404", code)
	}
	if code, out := c.Do("GET", "/api/v1/nothing", nil); code != 404 || out["error"] == nil {
		t.Errorf("unknown route: %d %v", code, out)
	}
	// Writes go to the device and come back as the new value.
	const setpoint = "limeworks/lyon/kilns/line1/kiln1/production_setpoint"
	if code, out := c.Do("POST", "/api/v1/write", map[string]any{"path": setpoint, "value": 12.5}); code != 200 || out["value"] != 12.5 {
		t.Fatalf("write: %d %v", code, out)
	}
	for _, bad := range []struct {
		body map[string]any
		code int
		want string
	}{
		{map[string]any{"path": setpoint, "value": 31}, 400, "outside the tag's writable range 0 to 30 t/h"},
		{map[string]any{"path": setpoint, "value": -1}, 400, "writable range"},
		{map[string]any{"path": "limeworks/lyon/kilns/line1/kiln1/o2", "value": 3}, 409, "read-only"},
		{map[string]any{"path": setpoint, "value": "fast"}, 400, "value"},
		{map[string]any{"path": setpoint}, 400, "value"},
		{map[string]any{"path": "limeworks/none", "value": 1}, 404, "path"},
		{map[string]any{"path": "a/#", "value": 1}, 400, "path"},
		{map[string]any{"path": setpoint, "value": 1, "extra": true}, 400, "body"},
	} {
		code, out := c.Do("POST", "/api/v1/write", bad.body)
		if msg, _ := out["error"].(string); code != bad.code || !strings.Contains(msg, bad.want) {
			t.Errorf("write %v: %d %v, want %d naming %s", bad.body, code, out, bad.code, bad.want)
		}
	}
	code, audit := c.Do("GET", "/api/v1/audit", nil)
	if code != 200 || audit["count"].(float64) < 2 {
		t.Fatalf("audit: %d %v", code, audit)
	}
	newest := audit["entries"].([]any)[0].(map[string]any)
	if newest["user"] != "admin" || newest["path"] != "limeworks/lyon/kilns/line1/kiln1/o2" || !strings.HasPrefix(newest["result"].(string), "refused") {
		t.Errorf("newest audit entry %v", newest)
	}
	if st := d.app.cloud.Host.Stats(); st.SeqGaps != 0 || st.Malformed != 0 {
		t.Errorf("host stats: %+v", st)
	}
	checkCloudMetrics(t, base)

	// Guessing passwords gets a client locked out for a while (last: it
	// locks this test out too).
	for range 5 {
		anon.Do("POST", "/api/v1/login", map[string]string{"username": "admin", "password": "guess"})
	}
	code, out := anon.Do("POST", "/api/v1/login", map[string]string{"username": "admin", "password": "test-admin-pw"})
	if msg, _ := out["error"].(string); code != 429 || !strings.Contains(msg, "too many failed logins") {
		t.Errorf("after 6 failed logins: %d %v", code, out)
	}
}

// TestDemoRestartKeepsHistory stops the demo cleanly and starts it again on
// the same data dir: the history is still there and grows.
func TestDemoRestartKeepsHistory(t *testing.T) {
	dir := t.TempDir()
	d := startTestDemo(t, dir)
	ctx := context.Background()
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		n, err := d.app.cloud.Historian.Count(ctx, lifePath)
		if err == nil && n < 20 {
			err = fmt.Errorf("%d values", n)
		}
		return err
	})
	sctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	stopAt := time.Now()
	if err := d.shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(stopAt); took > 5*time.Second {
		t.Fatalf("shutdown took %s", took)
	}

	d2 := startTestDemo(t, dir)
	before, err := d2.app.cloud.Historian.Count(ctx, lifePath)
	if err != nil || before < 20 {
		t.Fatalf("after restart: %d values, %v", before, err)
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		n, err := d2.app.cloud.Historian.Count(ctx, lifePath)
		if err == nil && n < before+20 {
			err = fmt.Errorf("%d values, had %d", n, before)
		}
		return err
	})
	// The edges kept their bdSeq across the restart.
	for _, n := range d2.app.cloud.Host.Nodes() {
		if n.BdSeq != 1 {
			t.Errorf("node %s bdSeq after restart = %d, want 1", n.Edge, n.BdSeq)
		}
	}
}

// TestLogFormat: JSON lines for a collector unless on a terminal or told.
func TestLogFormat(t *testing.T) {
	for _, tc := range []struct{ format, prefix string }{{"auto", `{"time":`}, {"json", `{"time":`}, {"text", "time="}} {
		var b bytes.Buffer
		log, err := newLogger(&b, "info", tc.format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("connected", "edge", "g/e", "device", "kiln1")
		if !strings.HasPrefix(b.String(), tc.prefix) || !strings.Contains(b.String(), "kiln1") {
			t.Errorf("format %s: %q", tc.format, b.String())
		}
	}
}

func TestCLI(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"help", []string{"help"}, 0, "Commands:"},
		{"help demo", []string{"help", "demo"}, 0, "-data-dir"},
		{"help unknown", []string{"help", "nope"}, 2, "unknown command"},
		{"demo help", []string{"demo", "--help"}, 0, "-mqtt"},
		{"edge help", []string{"edge", "-h"}, 0, "-config"},
		{"cloud help", []string{"cloud", "--help"}, 0, "-config"},
		{"version help", []string{"version", "--help"}, 0, "DuckDB"},
		{"version", []string{"version"}, 0, "calx "},
		{"unknown flag", []string{"demo", "--nope"}, 2, "flag provided but not defined"},
		{"stray argument", []string{"version", "extra"}, 2, "unexpected argument"},
		{"bad log level", []string{"edge", "--log-level", "loud"}, 2, "--log-level \"loud\""},
		{"bad log format", []string{"cloud", "--log-format", "xml"}, 2, "--log-format"},
		{"missing config", []string{"cloud", "--config", "/nonexistent/cloud.yaml"}, 1, "no such file"},
		{"opcua help", []string{"help", "opcua"}, 0, "-security-policy"},
		{"opcua no verb", []string{"opcua"}, 2, "usage"},
		{"opcua no endpoint", []string{"opcua", "browse"}, 2, "usage"},
		{"opcua bad endpoint", []string{"opcua", "browse", "http://x"}, 1, "opc.tcp://"},
		{"config help", []string{"help", "config"}, 0, "offline"},
		{"bench help", []string{"help", "bench"}, 0, "-tags-per-edge"},
		{"bench target without mqtt", []string{"bench", "--target", "http://127.0.0.1:1"}, 2, "--mqtt"},
		{"bench in-process and target", []string{"bench", "--in-process", "--target", "http://127.0.0.1:1"}, 2, "exclude each other"},
		{"config no file", []string{"config", "validate"}, 2, "usage"},
		{"config example", []string{"config", "validate", "examples/fleet.yaml"}, 0, "limeworks/ghent-edge (site ghent): 2 devices"},
		{"config broken", []string{"config", "validate", "fleet/testdata/broken.yaml"}, 1, "no such template"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String()+errb.String(), tc.out) {
				t.Fatalf("output lacks %q: stdout %q stderr %q", tc.out, out.String(), errb.String())
			}
		})
	}
}
