package historian

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Cycles and alarm transitions written twice (a replay after a restart)
// are stored once, and read back by machine prefix, name, class and time.
func TestCyclesAndJournalAreIdempotent(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	t0 := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	cycles := []uns.Cycle{
		{Machine: "lw/ghent/kilns/line1/kiln1", Name: "burn", Start: t0, End: t0.Add(time.Minute), Values: map[string]float64{"energy_kwh": 4.1, "duration_s": 60}},
		{Machine: "lw/ghent/kilns/line1/kiln1", Name: "burn", Start: t0.Add(time.Minute), End: t0.Add(2 * time.Minute), Values: map[string]float64{"energy_kwh": 4.3, "duration_s": 60}},
		{Machine: "lw/lyon/kilns/line1/kiln1", Name: "burn", Start: t0, End: t0.Add(90 * time.Second), Values: map[string]float64{"energy_kwh": 6}},
		{Machine: "lw/ghent/kilns/line1/kiln10", Name: "burn", Start: t0, End: t0.Add(time.Minute), Values: map[string]float64{}},
	}
	v := 612.5
	until := t0.Add(time.Hour)
	trs := []uns.Transition{
		{Alarm: "lw/ghent/kilns/line1/kiln1/_alarms/co_high", Tag: "co", Kind: "high", Priority: "high", Class: "emission", TS: t0, Event: "raise", State: uns.StateUnacked, Value: &v, Limit: 500},
		{Alarm: "lw/ghent/kilns/line1/kiln1/_alarms/co_high", Tag: "co", Kind: "high", Priority: "high", Class: "emission", TS: t0.Add(time.Second), Event: "ack", State: uns.StateAcked, Limit: 500, User: "op1", Comment: "seen"},
		{Alarm: "lw/ghent/kilns/line1/kiln1/_alarms/tripped", Tag: "state", Kind: "state", Priority: "medium", TS: t0.Add(2 * time.Second), Event: "shelve", State: uns.StateNormal, Shelved: &until, User: "op1", Comment: "maintenance"},
	}
	for range 2 {
		if err := h.WriteCycles(ctx, cycles); err != nil {
			t.Fatal(err)
		}
		if err := h.WriteTransitions(ctx, trs); err != nil {
			t.Fatal(err)
		}
	}
	// A redelivery within one batch: the same transition twice in a call.
	if err := h.WriteTransitions(ctx, []uns.Transition{trs[0], trs[0]}); err != nil {
		t.Fatal(err)
	}
	got, err := h.Cycles(ctx, CycleQuery{Machine: "lw/ghent/kilns/line1/kiln1", Name: "burn", From: t0, To: t0.Add(time.Hour), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Values["energy_kwh"] != 4.1 || got[1].Values["energy_kwh"] != 4.3 || !got[1].End.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("cycles of kiln1 %+v", got)
	}
	all, err := h.Cycles(ctx, CycleQuery{Machine: "lw", From: t0, To: t0.Add(time.Hour), Limit: 2})
	if err != nil || len(all) != 2 || !all[1].End.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("the 2 newest cycles %+v %v", all, err)
	}
	j, err := h.Journal(ctx, JournalQuery{Alarm: "lw/ghent", From: t0, To: t0.Add(time.Hour), Limit: 100})
	if err != nil || len(j) != 3 {
		t.Fatalf("journal %+v %v", j, err)
	}
	if j[0].Value == nil || *j[0].Value != v || j[1].User != "op1" || j[1].Value != nil || j[2].Shelved == nil || !j[2].Shelved.Equal(until) {
		t.Fatalf("journal rows %+v", j)
	}
	em, err := h.Journal(ctx, JournalQuery{Class: "emission", Event: "raise", From: t0, To: t0.Add(time.Hour), Limit: 100})
	if err != nil || len(em) != 1 || em[0].State != uns.StateUnacked {
		t.Fatalf("emission raises %+v %v", em, err)
	}
}
