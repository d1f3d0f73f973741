package transform

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// step is one input of an alarm test: a sample of the tag (or of the
// setpoint tag, sp), a tick of the clock, an ack or a shelve; want lists the
// transitions it must bring about as "event@seconds>state".
type step struct {
	at    float64
	v     any // float64, string, bool; nil: a bad sample
	sp    bool
	sup   bool // a sample of the tag of SuppressWhen
	tick  bool
	ack   bool
	shelv float64 // shelve for this many seconds
	want  string
}

func runAlarm(t *testing.T, d AlarmDef, steps []step) *Alarm {
	t.Helper()
	a := NewAlarm("site/area/kiln1", d)
	for i, s := range steps {
		var trs []Transition
		switch {
		case s.tick:
			trs = a.Tick(at(s.at))
		case s.ack:
			tr, err := a.Ack(at(s.at), "op1", "seen")
			if err != nil {
				trs = nil
			} else {
				trs = []Transition{tr}
			}
		case s.shelv != 0:
			trs = []Transition{a.Shelve(at(s.at), at(s.at+s.shelv), "op1", "maintenance")}
		default:
			smp := uns.Sample{Path: "x", TS: at(s.at), Quality: uns.Good}
			switch v := s.v.(type) {
			case nil:
				smp.Value, smp.Quality = uns.Null, uns.Bad
			case float64:
				smp.Value = uns.Float(v)
			case string:
				smp.Value = uns.String(v)
			case bool:
				smp.Value = uns.Bool(v)
			}
			if s.sp {
				trs = a.ObserveSetpoint(smp)
			} else if s.sup {
				trs = a.ObserveSuppression(smp)
			} else {
				trs = a.Observe(smp)
			}
		}
		var got []string
		for _, tr := range trs {
			got = append(got, fmt.Sprintf("%s@%g>%s", tr.Event, tr.TS.Sub(t0).Seconds(), tr.State))
		}
		if g := strings.Join(got, " "); g != s.want {
			t.Fatalf("step %d (%+v): got %q, want %q", i, s, g, s.want)
		}
	}
	return a
}

func TestAlarmKinds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		def   AlarmDef
		steps []step
	}{
		{"high with deadband", AlarmDef{Name: "co_high", Tag: "co", Kind: KindHigh, Limit: 100, Deadband: 5}, []step{
			{at: 0, v: 90.0},
			{at: 1, v: 100.0}, // at the limit is not above it
			{at: 2, v: 101.0, want: "raise@2>active_unacked"},
			{at: 3, v: 97.0}, // within the deadband: still active
			{at: 4, v: 94.0, want: "clear@4>cleared_unacked"},
			{at: 5, v: 99.0}, // below the limit: no raise
			{at: 6, ack: true, want: "ack@6>normal"},
		}},
		{"high high with on and off delays", AlarmDef{Name: "co_hh", Tag: "co", Kind: KindHighHigh, Limit: 200, OnDelay: 10 * time.Second, OffDelay: 5 * time.Second}, []step{
			{at: 0, v: 250.0},
			{at: 5, v: 150.0}, // gone before the delay: nothing
			{at: 6, v: 260.0},
			{at: 15, v: 270.0},
			{at: 16.5, tick: true, want: "raise@16>active_unacked"},
			{at: 20, ack: true, want: "ack@20>active_acked"},
			{at: 30, v: 100.0},
			{at: 32, v: 300.0}, // back within the off delay: stays active
			{at: 33, v: 100.0},
			{at: 40, v: 90.0, want: "clear@38>normal"},
		}},
		{"low and low low", AlarmDef{Name: "o2_low", Tag: "o2", Kind: KindLow, Limit: 1, Deadband: 0.2}, []step{
			{at: 0, v: 2.0},
			{at: 1, v: 0.9, want: "raise@1>active_unacked"},
			{at: 2, v: 1.1},
			{at: 3, v: 1.3, want: "clear@3>cleared_unacked"},
			{at: 4, v: 0.5, want: "raise@4>active_unacked"}, // again before anyone acknowledged
		}},
		{"deviation from a setpoint tag", AlarmDef{Name: "tph_dev", Tag: "tph", Kind: KindDeviation, Limit: 2, Setpoint: "tph_sp"}, []step{
			{at: 0, v: 20.0}, // no setpoint yet: nothing
			{at: 1, v: 18.0, sp: true},
			{at: 2, v: 20.0, sp: true},
			{at: 3, v: 23.0, want: "raise@3>active_unacked"},
			{at: 4, v: 23.0, sp: true, want: "clear@4>cleared_unacked"},
		}},
		{"deviation from a number", AlarmDef{Name: "t_dev", Tag: "t", Kind: KindDeviation, Limit: 50, Setpoint: "1100"}, []step{
			{at: 0, v: 1149.0},
			{at: 1, v: 1040.0, want: "raise@1>active_unacked"},
		}},
		{"rate of change", AlarmDef{Name: "t_rate", Tag: "t", Kind: KindRate, Limit: 5}, []step{
			{at: 0, v: 1000.0},
			{at: 2, v: 1008.0},
			{at: 3, v: 1016.0, want: "raise@3>active_unacked"},
			{at: 5, v: 1020.0, want: "clear@5>cleared_unacked"},
		}},
		{"boolean state", AlarmDef{Name: "tripped", Tag: "running", Kind: KindState, State: false, Priority: "high"}, []step{
			{at: 0, v: true},
			{at: 1, v: false, want: "raise@1>active_unacked"},
			{at: 2, v: nil}, // bad: holds
			{at: 3, v: true, want: "clear@3>cleared_unacked"},
		}},
		{"string state", AlarmDef{Name: "trip", Tag: "state", Kind: KindState, State: "tripped"}, []step{
			{at: 0, v: "running"},
			{at: 1, v: "tripped", want: "raise@1>active_unacked"},
			{at: 2, ack: true, want: "ack@2>active_acked"},
			{at: 3, ack: true}, // nothing to acknowledge
			{at: 4, v: "warmup", want: "clear@4>normal"},
		}},
		{"stale", AlarmDef{Name: "co_stale", Tag: "co", Kind: KindStale, After: 30 * time.Second}, []step{
			{at: 0, v: 1.0},
			{at: 20, tick: true},
			{at: 25, v: 2.0},
			{at: 56, tick: true, want: "raise@55>active_unacked"},
			{at: 57, v: nil}, // a stale marker is no new value
			{at: 60, v: 3.0, want: "clear@60>cleared_unacked"},
		}},
		{"bad value holds a limit alarm", AlarmDef{Name: "h", Tag: "x", Kind: KindHigh, Limit: 10}, []step{
			{at: 0, v: 20.0, want: "raise@0>active_unacked"},
			{at: 1, v: nil},
			{at: 2, v: nil},
			{at: 3, v: 5.0, want: "clear@3>cleared_unacked"},
		}},
		{"shelving hides and expires", AlarmDef{Name: "h", Tag: "x", Kind: KindHigh, Limit: 10}, []step{
			{at: 0, shelv: 60, want: "shelve@0>normal"},
			{at: 1, v: 20.0, want: "raise@1>active_unacked"}, // it still changes state, unannunciated
			{at: 61, tick: true, want: "unshelve@60>active_unacked"},
		}},
		{"older sample ignored", AlarmDef{Name: "h", Tag: "x", Kind: KindHigh, Limit: 10}, []step{
			{at: 5, v: 1.0},
			{at: 4, v: 20.0},
			{at: 6, v: 2.0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { runAlarm(t, tc.def, tc.steps) })
	}
}

func TestAlarmStatesAndAnnunciation(t *testing.T) {
	a := runAlarm(t, AlarmDef{Name: "h", Tag: "x", Kind: KindHigh, Limit: 10}, []step{
		{at: 0, shelv: 100, want: "shelve@0>normal"},
		{at: 1, v: 20.0, want: "raise@1>active_unacked"},
	})
	if a.Annunciated(at(50)) || !a.Annunciated(at(100)) {
		t.Fatal("a shelved alarm annunciated, or an unshelved one not")
	}
	tr := a.Shelve(at(50), at(40), "op2", "back")
	if tr.Event != EventUnshelve || tr.User != "op2" || !a.Annunciated(at(51)) {
		t.Fatalf("unshelve: %+v", tr)
	}
	if tr.Value == nil || *tr.Value != 20 || tr.Limit != 10 || tr.Priority != "medium" || tr.Alarm != "site/area/kiln1/_alarms/h" {
		t.Fatalf("transition carries %+v", tr)
	}
}

// An alarm suppressed by design does not raise while the plant is in the
// state named; an active alarm clears when suppression begins, and a
// condition that still holds when it ends raises after its on delay.
func TestAlarmSuppressedByDesign(t *testing.T) {
	d := AlarmDef{Name: "temp_low", Tag: "temp", Kind: KindLow, Limit: 800, OnDelay: 10 * time.Second,
		SuppressWhen: &Suppression{Tag: "running", State: false}}
	a := runAlarm(t, d, []step{
		{at: 0, v: true, sup: true},
		{at: 1, v: 700.0},
		{at: 11, tick: true, want: "raise@11>active_unacked"},
		{at: 20, v: false, sup: true, want: "clear@20>cleared_unacked suppress@20>cleared_unacked"},
		{at: 21, v: 500.0},
		{at: 40, tick: true}, // condition held for 19 s: suppressed, no raise
		{at: 41, v: nil, sup: true},
		{at: 42, v: false, sup: true},
		{at: 30, v: true, sup: true}, // older than the last: nothing
		{at: 50, ack: true, want: "ack@50>normal"},
		{at: 60, v: true, sup: true, want: "unsuppress@60>normal"},
		{at: 65, tick: true},
		{at: 70, tick: true, want: "raise@70>active_unacked"},
	})
	if !a.Annunciated(at(71)) || a.Suppressed {
		t.Fatal("the alarm raised after suppression is not annunciated")
	}
	// A stale alarm of a stopped machine: suppressed, it does not raise.
	runAlarm(t, AlarmDef{Name: "silent", Tag: "temp", Kind: KindStale, After: 5 * time.Second,
		SuppressWhen: &Suppression{Tag: "mode", State: "maintenance"}}, []step{
		{at: 0, v: "production", sup: true},
		{at: 1, v: 900.0},
		{at: 2, v: "maintenance", sup: true, want: "suppress@2>normal"},
		{at: 30, tick: true},
		{at: 31, v: "production", sup: true, want: "unsuppress@31>normal raise@31>active_unacked"},
	})
}

func TestAlarmDefValidate(t *testing.T) {
	for _, tc := range []struct {
		def  AlarmDef
		want string
	}{
		{AlarmDef{Name: "a", Tag: "x", Kind: "above"}, "kind"},
		{AlarmDef{Name: "a", Kind: KindHigh}, "tag"},
		{AlarmDef{Name: "a b/c", Tag: "x", Kind: KindHigh}, "name"},
		{AlarmDef{Name: "a", Tag: "x", Kind: KindDeviation}, "setpoint"},
		{AlarmDef{Name: "a", Tag: "x", Kind: KindState}, "state"},
		{AlarmDef{Name: "a", Tag: "x", Kind: KindStale}, "after"},
		{AlarmDef{Name: "a", Tag: "x", Kind: KindHigh, Priority: "critical"}, "priority"},
		{AlarmDef{Name: "a", Tag: "x", Kind: KindHigh, Deadband: -1}, "deadband"},
		{AlarmDef{Name: "a", Tag: "x", Kind: KindHigh, SuppressWhen: &Suppression{Tag: "running"}}, "suppress_when"},
	} {
		err := tc.def.Validate("alarms[0]")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "alarms[0]") {
			t.Errorf("%+v: %v, want an error about %s", tc.def, err, tc.want)
		}
	}
	ok := AlarmDef{Name: "co_high", Tag: "co", Kind: KindHigh, Limit: 100}
	if err := ok.Validate("x"); err != nil {
		t.Error(err)
	}
}
