package sim

import (
	"math"
	"os"
	"testing"
	"time"

	"github.com/calx-iiot/calx/config"
)

func TestSignals(t *testing.T) {
	g, err := NewSignals("d", SignalSettings{Seed: 1, Signals: []Signal{
		{Name: "sine", Kind: SignalSine, Low: 0, High: 10, Period: 4 * time.Second},
		{Name: "ramp", Kind: SignalRamp, Low: 0, High: 100, Period: 10 * time.Second},
		{Name: "count", Kind: SignalCounter, Low: 5, Step: 2},
		{Name: "walk", Kind: SignalRandomWalk, Low: 0, High: 1, Step: 0.5},
		{Name: "square", Kind: SignalSquare, Low: 1, High: 2, Period: 2 * time.Second},
		{Name: "step", Kind: SignalStep, Low: 0, High: 10, Step: 1, Period: 3 * time.Second},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	at := func(s float64) map[string]float64 {
		m := map[string]float64{}
		for _, r := range g.At(t0.Add(time.Duration(s * float64(time.Second)))) {
			f, _ := r.Value.AsFloat()
			m[r.Tag] = f
		}
		return m
	}
	v0 := at(0)
	if v0["sine"] != 5 || v0["ramp"] != 0 || v0["count"] != 5 || v0["square"] != 1 {
		t.Fatalf("t=0: %v", v0)
	}
	v1 := at(1)
	if math.Abs(v1["sine"]-10) > 1e-9 || v1["ramp"] != 10 || v1["count"] != 7 || v1["square"] != 2 {
		t.Fatalf("t=1: %v", v1)
	}
	for i := range 200 {
		v := at(float64(2 + i))
		if v["walk"] < 0 || v["walk"] > 1 || v["step"] < 0 || v["step"] > 10 || v["step"] != math.Trunc(v["step"]) {
			t.Fatalf("t=%d out of bounds: %v", 2+i, v)
		}
	}
	if _, err := NewSignals("d", SignalSettings{Signals: []Signal{{Name: "x", Kind: "chirp"}}}); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, err := NewSignals("d", SignalSettings{Signals: []Signal{{Name: "x", Kind: SignalSine, Low: 5, High: 1}}}); err == nil {
		t.Error("high below low accepted")
	}
}

func TestSampleConfig(t *testing.T) {
	b, err := os.ReadFile("sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var s SignalSettings
	if err := config.Decode("sample.yaml", b, &s); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSignals("sample", s); err != nil {
		t.Fatal(err)
	}
}
