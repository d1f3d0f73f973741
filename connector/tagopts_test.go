package connector

import (
	"testing"

	"github.com/calx-iiot/calx/uns"
)

func TestTagOptionsScaling(t *testing.T) {
	for name, tc := range map[string]struct {
		o        TagOptions
		raw, eng uns.Value
	}{
		"none":          {TagOptions{}, uns.Int(7), uns.Int(7)},
		"scale":         {TagOptions{Scale: 0.5, Offset: 10}, uns.Int(40), uns.Float(30)},
		"range":         {TagOptions{RawLow: 0, RawHigh: 4000, EngLow: 0, EngHigh: 1400}, uns.Int(2000), uns.Float(700)},
		"range clamped": {TagOptions{RawLow: 4000, RawHigh: 20000, EngLow: 0, EngHigh: 100, Clamp: true}, uns.Int(2000), uns.Float(0)},
		"clamp only":    {TagOptions{EngLow: 0, EngHigh: 100, Clamp: true}, uns.Float(120), uns.Float(100)},
		"bool":          {TagOptions{Scale: 2}, uns.Bool(true), uns.Bool(true)},
		"string":        {TagOptions{Scale: 2}, uns.String("x"), uns.String("x")},
	} {
		if got := tc.o.ToEng(tc.raw); !got.Equal(tc.eng) {
			t.Errorf("%s: ToEng(%v) = %v, want %v", name, tc.raw.Any(), got.Any(), tc.eng.Any())
		}
	}
	o := TagOptions{RawLow: 0, RawHigh: 27648, EngLow: 0, EngHigh: 1200}
	if got := o.ToRaw(uns.Float(600)); !got.Equal(uns.Float(13824)) {
		t.Errorf("ToRaw(600) = %v", got.Any())
	}
	if got := (&TagOptions{Scale: 0.1}).ToRaw(uns.Float(21.5)); got.F < 214.99 || got.F > 215.01 {
		t.Errorf("ToRaw(21.5) with scale 0.1 = %v", got.Any())
	}
	if d := (&TagOptions{Scale: 0.1}).Def("t", uns.TypeInt64); d.DataType != uns.TypeFloat64 {
		t.Errorf("a scaled integer tag is %v, want float64", d.DataType)
	}
	d := (&TagOptions{Unit: "°C", EngLow: 0, EngHigh: 1400, DeadbandPct: 1, Writable: true}).Def("t", uns.TypeInt64)
	if d.DataType != uns.TypeInt64 || d.High != 1400 || d.Deadband.Percent != 1 || !d.Writable || d.Unit != "°C" {
		t.Errorf("Def = %+v", d)
	}
}

func TestTagOptionsCheck(t *testing.T) {
	for name, o := range map[string]TagOptions{
		"range without eng": {RawLow: 0, RawHigh: 100},
		"scale and range":   {Scale: 2, RawLow: 0, RawHigh: 100, EngLow: 0, EngHigh: 1},
		"clamp without eng": {Clamp: true},
		"negative deadband": {Deadband: -1},
	} {
		if err := o.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (&TagOptions{Scale: 0.1, Offset: -40, Deadband: 0.5}).Check(); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}
