package sim

import (
	"testing"
	"time"

	"github.com/calx-iiot/calx/connector"
)

func values(rs []connector.Reading) map[string]connector.Reading {
	m := map[string]connector.Reading{}
	for _, r := range rs {
		m[r.Tag] = r
	}
	return m
}

// TestKilnLifecycle drives the model through warm-up, cycles, a trip and a
// restart, and checks the values stay plausible.
func TestKilnLifecycle(t *testing.T) {
	k, err := New("test/kiln", Settings{Interval: time.Second, CycleTime: time.Minute, WarmupTime: 2 * time.Minute,
		MeanTimeBetweenTrips: 20 * time.Minute, TripTime: time.Minute, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]bool{}
	for _, td := range k.Tags() {
		tags[td.Name] = true
	}
	t0 := time.Unix(1767225600, 0)
	seen := map[string]bool{}
	var lastCycles, lastLife int64
	for i := range 4 * 3600 {
		now := t0.Add(time.Duration(i) * time.Second)
		v := values(k.Step(now, 1))
		for name := range v {
			if !tags[name] {
				t.Fatalf("reading of undeclared tag %s", name)
			}
		}
		st := v[TagState].Value.S
		seen[st] = true
		temp := v[TagTemp].Value.F
		if temp < 0 || temp > 1400 {
			t.Fatalf("t=%ds temperature %.1f out of range", i, temp)
		}
		if o2 := v[TagO2].Value.F; o2 < 0 || o2 > 21 {
			t.Fatalf("o2 %.2f out of range", o2)
		}
		if running := v[TagRunning].Value.I == 1; running != (st == StateRunning) {
			t.Fatalf("running=%v in state %s", running, st)
		}
		if st == StateTripped && v[TagFuel].Value.F != 0 {
			t.Fatalf("fuel flows while tripped")
		}
		if st == StateRunning && (temp < 950 || v[TagProduction].Value.F < 15) {
			t.Fatalf("t=%ds running with temp %.1f production %.1f", i, temp, v[TagProduction].Value.F)
		}
		c := v[TagCycles].Value.I
		if c < lastCycles {
			t.Fatal("cycle counter went back")
		}
		lastCycles = c
		if l := v[TagLife].Value.I; l != lastLife+1 {
			t.Fatalf("life counter %d after %d", l, lastLife)
		}
		lastLife++
		if v[TagTemp].TS != now {
			t.Fatal("reading not stamped at the read")
		}
	}
	for _, st := range []string{StateWarmup, StateRunning, StateTripped} {
		if !seen[st] {
			t.Errorf("state %s never reached in 4 h", st)
		}
	}
	if lastCycles < 60 {
		t.Errorf("%d cycles in 4 h", lastCycles)
	}
}

func TestSameSeedSameValues(t *testing.T) {
	a, _ := New("x", Settings{Seed: 7, StartHot: true})
	b, _ := New("x", Settings{Seed: 7, StartHot: true})
	t0 := time.Unix(0, 0)
	for i := range 100 {
		va, vb := a.Step(t0.Add(time.Duration(i)*time.Second), 1), b.Step(t0.Add(time.Duration(i)*time.Second), 1)
		for j := range va {
			if !va[j].Value.Equal(vb[j].Value) {
				t.Fatalf("step %d tag %s differs", i, va[j].Tag)
			}
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	if _, err := New("x", Settings{Interval: time.Microsecond}); err == nil {
		t.Error("interval of 1µs accepted")
	}
	if _, err := New("x", Settings{Interval: time.Minute, CycleTime: time.Second}); err == nil {
		t.Error("cycle shorter than the interval accepted")
	}
}
