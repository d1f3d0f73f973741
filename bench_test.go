package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/bench"
	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/web/webtest"
)

// TestBench runs a small bench against a cloud in the process and checks
// that every stage saw the values and none was lost.
func TestBench(t *testing.T) {
	type rate struct {
		ValuesPerSec float64 `json:"values_per_sec"`
	}
	type latency struct {
		P50   *float64 `json:"p50_ms"`
		P99   *float64 `json:"p99_ms"`
		Count int64    `json:"count"`
	}
	var out, errb bytes.Buffer
	code := run([]string{"bench", "--in-process", "--edges", "3", "--tags-per-edge", "20", "--rate", "20", "--change-ratio", "0.5",
		"--duration", "2s", "--warmup", "1s", "--bare", "200ms", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r struct {
		Edges, Tags  int
		Offered      float64  `json:"offered_values_per_sec"`
		ValuesSent   int64    `json:"values_sent"`
		ValuesStored int64    `json:"values_stored"`
		Dropped      int64    `json:"dropped"`
		Broker       rate     `json:"broker_accepted"`
		Backbone     rate     `json:"backbone_persisted"`
		Host         rate     `json:"host_decoded"`
		Historian    rate     `json:"historian_committed"`
		Live         rate     `json:"live_api"`
		ToHistorian  latency  `json:"sample_to_historian"`
		ToLive       latency  `json:"sample_to_live_api"`
		CPU          float64  `json:"cpu_cores"`
		RSS          float64  `json:"peak_rss_mib"`
		Appender     float64  `json:"bare_duckdb_appender_values_per_sec"`
		Publish      float64  `json:"bare_jetstream_publish_values_per_sec"`
		CatchUpSecs  *float64 `json:"historian_catch_up_seconds"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	// 3 edges x 20 tags x 20 Hz x 0.5 = 600 values/s offered.
	if r.Edges != 3 || r.Tags != 60 || r.Offered != 600 {
		t.Fatalf("scenario: %s", out.String())
	}
	if r.Dropped != 0 || r.ValuesSent < 1000 || r.ValuesStored != r.ValuesSent {
		t.Fatalf("sent %d, stored %d, dropped %d", r.ValuesSent, r.ValuesStored, r.Dropped)
	}
	for name, v := range map[string]float64{"broker": r.Broker.ValuesPerSec, "backbone": r.Backbone.ValuesPerSec, "host": r.Host.ValuesPerSec,
		"historian": r.Historian.ValuesPerSec, "live": r.Live.ValuesPerSec} {
		if v < 300 || v > 900 {
			t.Errorf("%s at %.0f values/s, offered 600", name, v)
		}
	}
	if r.ToHistorian.Count == 0 || r.ToHistorian.P50 == nil || *r.ToHistorian.P99 < *r.ToHistorian.P50 || r.ToLive.Count == 0 || r.ToLive.P99 == nil {
		t.Errorf("latencies: %s", out.String())
	}
	if r.CPU <= 0 || r.RSS <= 0 || r.Appender <= 0 || r.Publish <= 0 {
		t.Errorf("costs and bare limits: %s", out.String())
	}
	// 600 values/s leave no backlog worth a catch-up rate.
	if r.CatchUpSecs == nil || *r.CatchUpSecs != 0 {
		t.Errorf("historian catch-up reported without a backlog: %s", out.String())
	}
}

func TestBenchScenarioErrors(t *testing.T) {
	sc, err := bench.LoadScenario("examples/bench-fleet.yaml")
	if err != nil || len(sc.Fleets) != 2 || sc.Offered() != 6000 || sc.Duration.Std() != 30*time.Second {
		t.Fatalf("example scenario: %+v, offered %v: %v", sc, sc.Offered(), err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "fleet.yaml")
	for _, tc := range []struct{ yaml, want string }{
		{"fleets:\n  - group: a\n    edges: 2\n    tags_per_edge: 10\n    rate: 1\n    change_ratio: 1\n    colour: red\nduration: 1s\n", "fleet.yaml:7: colour"},
		{"fleets:\n  - group: a\n    edges: 0\n    tags_per_edge: 10\n    rate: 1\n    change_ratio: 1\nduration: 1s\n", "fleets[0].edges"},
		{"fleets:\n  - {group: a, edges: 1, tags_per_edge: 10, rate: 1, change_ratio: 2}\nduration: 1s\n", "change_ratio"},
		{"fleets: []\nduration: 1s\n", "at least one fleet"},
	} {
		if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		if code := run([]string{"bench", "--scenario", file}, &out, &errb); code != 1 || !strings.Contains(errb.String(), tc.want) ||
			!strings.Contains(errb.String(), "fleet.yaml") {
			t.Errorf("%q: exit %d, %s; want the file and %q", tc.yaml, code, errb.String(), tc.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"bench", "--rate", "0"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "rate") {
		t.Errorf("--rate 0: exit %d, %s", code, errb.String())
	}
}

// TestBenchAgainstRunningCloud measures a cloud that runs on its own: the
// bench provisions an account per edge through the API.
func TestBenchAgainstRunningCloud(t *testing.T) {
	t.Setenv("CALX_BENCH_PASSWORD", webtest.AdminPassword)
	app := webtest.Start(t, cloud.Options{})
	var out, errb bytes.Buffer
	code := run([]string{"bench", "--target", app.Base, "--mqtt", "tcp://" + app.Cloud.Broker.Addr(),
		"--edges", "2", "--tags-per-edge", "5", "--rate", "10", "--duration", "1s", "--warmup", "0s", "--bare", "0", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r struct {
		Sent    int64 `json:"values_sent"`
		Stored  int64 `json:"values_stored"`
		Dropped int64 `json:"dropped"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Sent < 50 || r.Stored != r.Sent || r.Dropped != 0 {
		t.Fatalf("%+v %v: %s", r, err, out.String())
	}
	// The cloud had no edge accounts: the edges could only connect with
	// the ones the bench provisioned.
}
