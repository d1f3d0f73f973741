package transform

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// rec is a recorded sample of a machine's tag.
type rec struct {
	at  float64
	tag string
	v   any
}

func feed(c *Cycler, recs []rec) []Cycle {
	var out []Cycle
	for _, r := range recs {
		s := uns.Sample{Path: uns.Path(c.Machine + "/" + r.tag), TS: at(r.at), Quality: uns.Good}
		switch v := r.v.(type) {
		case nil:
			s.Value, s.Quality = uns.Null, uns.Bad
		case float64:
			s.Value = uns.Float(v)
		case int:
			s.Value = uns.Int(int64(v))
		case bool:
			s.Value = uns.Bool(v)
		case string:
			s.Value = uns.String(v)
		}
		if cy, ok := c.Observe(r.tag, s); ok {
			out = append(out, cy)
		}
	}
	return out
}

func spans(cs []Cycle) string {
	var s []string
	for _, c := range cs {
		s = append(s, fmt.Sprintf("%g-%g", c.Start.Sub(t0).Seconds(), c.End.Sub(t0).Seconds()))
	}
	return strings.Join(s, " ")
}

func TestCycleTriggers(t *testing.T) {
	for _, tc := range []struct {
		name string
		def  CycleDef
		recs []rec
		want string
	}{
		{"counter increments", CycleDef{Name: "burn", Tag: "cycles", Trigger: TriggerIncrement}, []rec{
			{0, "cycles", 7}, {10, "cycles", 8}, {15, "cycles", 8}, {20, "cycles", nil}, {30, "cycles", 9}, {42, "cycles", 10},
		}, "10-30 30-42"},
		// A counter that goes back (the PLC restarted): the cycle under way
		// has no known end and is dropped.
		{"counter reset", CycleDef{Name: "burn", Tag: "cycles", Trigger: TriggerIncrement}, []rec{
			{0, "cycles", 7}, {10, "cycles", 8}, {20, "cycles", 0}, {25, "cycles", 1}, {35, "cycles", 2},
		}, "25-35"},
		{"rising edge", CycleDef{Name: "batch", Tag: "start", Trigger: TriggerRising}, []rec{
			{0, "start", true}, {1, "start", false}, {5, "start", true}, {6, "start", false}, {9, "start", true}, {10, "start", true},
		}, "5-9"},
		{"entering a state", CycleDef{Name: "run", Tag: "state", Trigger: TriggerEnter, State: "running"}, []rec{
			{0, "state", "warmup"}, {3, "state", "running"}, {8, "state", "tripped"}, {9, "state", "warmup"}, {12, "state", "running"}, {13, "state", "running"}, {20, "state", "tripped"}, {30, "state", "running"},
		}, "3-12 12-30"},
		{"leaving a state", CycleDef{Name: "run", Tag: "state", Trigger: TriggerLeave, State: "running"}, []rec{
			{0, "state", "running"}, {3, "state", "tripped"}, {8, "state", "running"}, {9, "state", "tripped"},
		}, "3-9"},
		{"while in a state", CycleDef{Name: "run", Tag: "state", Trigger: TriggerWhile, State: "running"}, []rec{
			{0, "state", "running"}, {3, "state", "tripped"}, {8, "state", "running"}, {9, "state", "running"}, {11, "state", "warmup"}, {15, "state", "running"},
		}, "0-3 8-11"},
		{"too short is a bounce", CycleDef{Name: "b", Tag: "start", Trigger: TriggerRising, MinLength: 2 * time.Second}, []rec{
			{0, "start", 1.0}, {0.5, "start", 0.0}, {1, "start", 1.0}, {1.2, "start", 0.0}, {5, "start", 1.0},
		}, "1-5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.def.Validate("cycles[0]"); err != nil {
				t.Fatal(err)
			}
			if got := spans(feed(NewCycler("site/kilns/kiln1", tc.def), tc.recs)); got != tc.want {
				t.Fatalf("cycles %q, want %q", got, tc.want)
			}
		})
	}
}

// A recorded kiln: power ramps within each cycle; the energy of a cycle is
// the integral of the power over it, exact for a piecewise linear power
// sampled at its corners however irregularly, and the value held over a
// cycle's boundary is split at the boundary.
func TestCycleAggregates(t *testing.T) {
	def := CycleDef{Name: "burn", Tag: "cycles", Trigger: TriggerIncrement, Aggregates: []CycleAggDef{
		{Name: "energy_kwh", Tag: "power_kw", Fn: AggIntegral},
		{Name: "avg_temp", Tag: "temp", Fn: AggAvg},
		{Name: "max_co", Tag: "co", Fn: AggMax},
		{Name: "min_co", Tag: "co", Fn: AggMin},
		{Name: "tonnes", Tag: "produced_t", Fn: AggDelta},
		{Name: "co_reads", Tag: "co", Fn: AggCount},
		{Name: "first_t", Tag: "temp", Fn: AggFirst},
		{Name: "last_t", Tag: "temp", Fn: AggLast},
	}}
	c := NewCycler("site/kilns/kiln1", def)
	cycles := feed(c, []rec{
		{0, "power_kw", 100.0}, {0, "temp", 1000.0}, {0, "produced_t", 50.0}, {0, "cycles", 0},
		{10, "cycles", 1}, // the first cycle starts at 10 s with power 100 held
		{20, "co", 30.0},
		{1810, "power_kw", 400.0}, // 10-1810: 100 -> 400 linearly
		{1810, "temp", 1100.0},
		{2000, "co", 90.0}, {2005, "co", 40.0},
		{3610, "produced_t", 62.5},
		{3610, "cycles", 2},     // ends at 3610 s: power held at 400 from 1810
		{4510, "power_kw", nil}, // a gap from 4510 to 5410
		{5410, "power_kw", 200.0},
		{7210, "cycles", 3},
	})
	if len(cycles) != 2 {
		t.Fatalf("%d cycles", len(cycles))
	}
	first := cycles[0]
	// Hours: 0.5 h ramping 100 -> 400 (125 kWh) + 0.5 h at 400 (200 kWh).
	// temp: 1000 for 1800 s, 1100 for 1800 s.
	want := map[string]float64{"energy_kwh": 325, "avg_temp": 1050, "max_co": 90, "min_co": 30, "tonnes": 12.5,
		"co_reads": 3, "first_t": 1000, "last_t": 1100, "duration_s": 3600}
	for k, v := range want {
		if got, ok := first.Values[k]; !ok || math.Abs(got-v) > 1e-9 {
			t.Errorf("first cycle %s = %v (%v), want %v", k, got, ok, v)
		}
	}
	// The second: 400 held 3610-4510 (100 kWh), nothing in the gap, 200
	// from 5410 to 7210 (100 kWh).
	if got := cycles[1].Values["energy_kwh"]; math.Abs(got-200) > 1e-9 {
		t.Errorf("second cycle energy %v, want 200", got)
	}
	if _, ok := cycles[1].Values["co_reads"]; !ok || cycles[1].Values["co_reads"] != 0 {
		t.Errorf("second cycle co reads %v", cycles[1].Values)
	}
}

func TestCycleDefValidate(t *testing.T) {
	for _, tc := range []struct {
		def  CycleDef
		want string
	}{
		{CycleDef{Name: "c", Tag: "x", Trigger: "edge"}, "trigger"},
		{CycleDef{Name: "c", Trigger: TriggerRising}, "tag"},
		{CycleDef{Name: "c", Tag: "x", Trigger: TriggerEnter}, "state"},
		{CycleDef{Name: "c", Tag: "x", Trigger: TriggerRising, Aggregates: []CycleAggDef{{Name: "e", Tag: "p", Fn: "sum"}}}, "fn"},
		{CycleDef{Name: "c", Tag: "x", Trigger: TriggerRising, Aggregates: []CycleAggDef{{Name: "duration_s", Tag: "p", Fn: AggAvg}}}, "used twice"},
	} {
		if err := tc.def.Validate("cycles[0]"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error about %s", tc.def, err, tc.want)
		}
	}
}
