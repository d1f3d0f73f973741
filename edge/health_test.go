package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/calx-iiot/calx/uns"
)

// The edge's HTTP: health, readiness, the status of its connections as
// JSON, and Prometheus metrics.
func TestHealthStatusAndMetrics(t *testing.T) {
	r := startBroker(t)
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	e := startEdge(t, r, t.TempDir(), dev)
	h, err := StartHealth(e, "127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + h.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before the host is online: %d %s", code, body)
	}
	r.state(true, uint64(time.Now().UnixMilli()))
	for i := range 5 {
		dev.ch <- []Reading{{Tag: "temp", TS: time.Now(), Value: uns.Float(float64(20 + 5*i))}}
	}
	var st struct {
		Edge        string       `json:"edge"`
		Online      bool         `json:"online"`
		Stats       Stats        `json:"stats"`
		Connections []ConnStatus `json:"connections"`
	}
	var body string
	// Ready comes with the host's state; the five readings are counted as
	// the edge's loop takes them, a moment later.
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if code, body := get("/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz %d %s", code, body)
		}
		var code int
		code, body = get("/api/v1/status")
		if code != http.StatusOK {
			return fmt.Errorf("status: %d %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return fmt.Errorf("status %s: %w", body, err)
		}
		if st.Stats.Read != 5 {
			return fmt.Errorf("status %s: %d read, want 5", body, st.Stats.Read)
		}
		return nil
	})
	if st.Edge != "g/e" || !st.Online || st.Stats.Read != 5 || len(st.Connections) != 1 {
		t.Fatalf("status %s", body)
	}
	if c := st.Connections[0]; c.Device != "d1" || !c.Connected || c.Reads != 5 || c.ReadsPerSec <= 0 {
		t.Fatalf("connection %+v", c)
	}
	_, metrics := get("/metrics")
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(metrics))
	if err != nil {
		t.Fatalf("metrics not in Prometheus text format: %v", err)
	}
	got := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for key, want := range map[string]float64{"calx_edge_values_read_total": 5, "calx_edge_values_sent_total": 5, "calx_edge_values_dropped_total": 0,
		"calx_edge_values_filtered_total": 0, "calx_edge_online": 1, "calx_edge_config_version": 0,
		"calx_edge_connection_up{device=d1}": 1, "calx_edge_connection_reads_total{device=d1}": 5, "calx_edge_connection_errors_total{device=d1}": 0} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	for _, key := range []string{"calx_edge_buffer_messages", "calx_edge_buffer_bytes", "calx_edge_buffer_oldest_seconds", "calx_edge_receipt_delay_seconds",
		"calx_edge_connection_latency_seconds{device=d1}", "process_resident_memory_bytes"} {
		if _, ok := got[key]; !ok {
			t.Errorf("metric %s missing", key)
		}
	}
	if code, body := get("/nosuch"); code != http.StatusNotFound || !strings.Contains(body, "no such route") {
		t.Fatalf("unknown route: %d %s", code, body)
	}
}

// lockedDevice hands its values over while holding its own lock, as the
// Modbus connector does, and takes that lock to report its latency.
type lockedDevice struct {
	mu sync.Mutex
	n  int
}

func (d *lockedDevice) Tags() []TagDef { return []TagDef{{Name: "n", DataType: uns.TypeInt64}} }

func (d *lockedDevice) Run(ctx context.Context, sink Sink) error {
	for ctx.Err() == nil {
		d.mu.Lock()
		d.n++
		sink.Emit([]Reading{{Tag: "n", TS: time.Now(), Value: uns.Int(int64(d.n)), Quality: uns.Good}})
		d.mu.Unlock()
	}
	return nil
}

func (d *lockedDevice) Latency() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Millisecond
}

// Asking for the connections while a connector emits must not deadlock:
// the edge may not call into a connector while it holds its own lock.
func TestConnectionsWhileConnectorEmits(t *testing.T) {
	r := startBroker(t)
	dev := &lockedDevice{}
	e, err := New(Options{Broker: "tcp://" + r.addr, Username: "u", Password: "p", Group: "g", EdgeID: "e",
		PrimaryHost: "calx", DataDir: t.TempDir(), Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(time.Second); time.Now().Before(end); {
			e.Connections()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Connections deadlocked with a connector handing over values")
	}
	e.Shutdown(context.Background())
}
