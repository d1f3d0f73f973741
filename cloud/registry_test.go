package cloud

import (
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// UpdateTags records values through the entries Define gave, and looks a
// path up when the entry given is missing or another tag's.
func TestRegistryUpdateTags(t *testing.T) {
	r := NewRegistry()
	a := r.Define(uns.Tag{Path: "g/e/d/a", Unit: "bar"})
	if again := r.Define(uns.Tag{Path: "g/e/d/a", Unit: "kPa"}); again != a || a.Unit != "kPa" {
		t.Fatal("Define of a known tag gave another entry or kept the old metadata")
	}
	b := r.Define(uns.Tag{Path: "g/e/d/b"})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r.UpdateTags([]uns.Sample{
		{Path: "g/e/d/a", TS: t0, Value: uns.Float(1)},
		{Path: "g/e/d/b", TS: t0, Value: uns.Float(2)},
		{Path: "g/e/d/c", TS: t0, Value: uns.Float(3)},
	}, []*TagState{a, a, nil})
	for p, want := range map[uns.Path]float64{"g/e/d/a": 1, "g/e/d/b": 2, "g/e/d/c": 3} {
		ts, ok := r.Get(p)
		if !ok || !ts.HasVal || ts.Value.F != want {
			t.Errorf("%s = %+v, want %v", p, ts, want)
		}
	}
	if b.Value.F != 2 {
		t.Errorf("b's entry holds %v", b.Value.F)
	}
	// An older value does not replace a newer one.
	r.UpdateTags([]uns.Sample{{Path: "g/e/d/a", TS: t0.Add(-time.Second), Value: uns.Float(9)}}, []*TagState{a})
	if a.Value.F != 1 {
		t.Errorf("an older value replaced the current one: %v", a.Value.F)
	}
}
