package cloud

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

type recorder struct{ got []string }

func (r *recorder) Publish(topic string, payload []byte, retain bool, _ byte) error {
	var p struct{ Value float64 }
	if err := json.Unmarshal(payload, &p); err != nil {
		return err
	}
	r.got = append(r.got, fmt.Sprintf("%s=%v retain=%v", topic, p.Value, retain))
	return nil
}

// TestRepublisherConflates: a tag's changed value goes out at the next
// tick; values within the interval wait, only the newest goes out once the
// interval is over, and the replaced ones are counted; history is not
// current state.
func TestRepublisherConflates(t *testing.T) {
	rec := &recorder{}
	reg := NewRegistry()
	reg.Watch(time.Second, 100*time.Millisecond)
	r := &republisher{reg: reg, pub: rec, log: slog.New(slog.DiscardHandler), interval: time.Second}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	v := func(p uns.Path, f float64, hist bool) uns.Sample {
		return uns.Sample{Path: p, Value: uns.Float(f), TS: t0.Add(time.Duration(f) * time.Millisecond), Historical: hist}
	}
	reg.Update([]uns.Sample{v("a", 1, false), v("b", 10, false), v("a", 0, true)})
	r.flush(t0)
	reg.Update([]uns.Sample{v("a", 2, false)})
	r.flush(t0.Add(100 * time.Millisecond)) // a waits
	reg.Update([]uns.Sample{v("a", 3, false), v("a", 4, false)})
	r.flush(t0.Add(200 * time.Millisecond))
	r.flush(t0.Add(time.Second))     // a's 4 goes out
	r.flush(t0.Add(2 * time.Second)) // nothing waits
	reg.Update([]uns.Sample{v("a", 5, false), v("b", 11, false)})
	r.flush(t0.Add(2500 * time.Millisecond))
	want := []string{"uns/a=1 retain=true", "uns/b=10 retain=true", "uns/a=4 retain=true", "uns/a=5 retain=true", "uns/b=11 retain=true"}
	if fmt.Sprint(rec.got) != fmt.Sprint(want) {
		t.Errorf("published %v, want %v", rec.got, want)
	}
	if n := r.conflated.Load(); n != 2 {
		t.Errorf("conflated %d, want 2 (values 2 and 3)", n)
	}
	if n := r.sent.Load(); n != 5 {
		t.Errorf("sent %d, want 5", n)
	}

	// An interval of 0: every value.
	rec.got = nil
	r = &republisher{reg: NewRegistry(), pub: rec, log: slog.New(slog.DiscardHandler)}
	r.take([]uns.Sample{v("a", 1, false), v("a", 2, false), v("a", 3, false), v("a", 0, true)})
	if len(rec.got) != 3 {
		t.Errorf("interval 0 published %v, want every current value", rec.got)
	}
}

// TestUNSIntervalConfig: unset is the default, 0s every value.
func TestUNSIntervalConfig(t *testing.T) {
	for yaml, want := range map[string]time.Duration{
		"mqtt: {listen: ':1883'}":                      0,
		"mqtt: {listen: ':1883', uns_interval: 0s}":    -1,
		"mqtt: {listen: ':1883', uns_interval: 5s}":    5 * time.Second,
		"mqtt: {listen: ':1883', uns_interval: 250ms}": 250 * time.Millisecond,
	} {
		f := filepath.Join(t.TempDir(), "cloud.yaml")
		if err := os.WriteFile(f, []byte("data_dir: /tmp/x\n"+yaml+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(f)
		if err != nil {
			t.Fatalf("%s: %v", yaml, err)
		}
		if got := cfg.MQTT.UNSEvery(); got != want {
			t.Errorf("%s: %v, want %v", yaml, got, want)
		}
	}
}
