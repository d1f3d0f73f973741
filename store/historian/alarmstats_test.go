package historian

import (
	"cmp"
	"context"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TestAlarmStats compares the report with one worked out by hand over a
// random journal: bursts that flood, alarms that chatter, alarms left
// standing, other classes and areas that the filters leave out.
func TestAlarmStats(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	rng := rand.New(rand.NewPCG(7, 11))
	t0 := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	alarms := []string{"lw/ghent/kiln1/_alarms/co_high", "lw/ghent/kiln1/_alarms/o2_low", "lw/ghent/kiln2/_alarms/temp_high",
		"lw/ghent/kiln2/_alarms/fan_trip", "lw/ghent/mill/_alarms/vib_high", "lw/lyon/kiln1/_alarms/co_high"}
	var trs []uns.Transition
	used := map[[2]any]bool{}
	add := func(a string, ts time.Time, ev, class string) {
		ts = ts.Truncate(time.Millisecond)
		if used[[2]any{a + ev, ts}] {
			return
		}
		used[[2]any{a + ev, ts}] = true
		trs = append(trs, uns.Transition{Alarm: a, Tag: "x", Kind: "high", Priority: uns.Priorities[len(a)%4], Class: class, TS: ts, Event: ev, State: uns.StateUnacked})
	}
	add("lw/ghent/kiln1/_alarms/stuck", t0.Add(15*time.Minute), uns.EventRaise, "process")
	// Raised and cleared in the same instant: not standing.
	add("lw/ghent/kiln2/_alarms/blip", t0.Add(20*time.Minute), uns.EventRaise, "process")
	add("lw/ghent/kiln2/_alarms/blip", t0.Add(20*time.Minute), uns.EventClear, "process")
	for i := range 120 {
		a := alarms[rng.IntN(len(alarms))]
		ts := t0.Add(time.Duration(rng.Int64N(int64(3 * time.Hour))))
		if i%30 == 0 { // a burst: one alarm, many raises in a few minutes
			for j := range 15 + rng.IntN(10) {
				add(a, ts.Add(time.Duration(j)*7*time.Second), uns.EventRaise, "process")
			}
			continue
		}
		class := "process"
		if rng.IntN(5) == 0 {
			class = "emission"
		}
		add(a, ts, uns.EventRaise, class)
		if rng.IntN(3) > 0 {
			add(a, ts.Add(time.Duration(rng.Int64N(int64(time.Hour)))), uns.EventClear, class)
		}
		if rng.IntN(4) == 0 {
			add(a, ts.Add(time.Second), uns.EventAck, class)
		}
	}
	if err := h.WriteTransitions(ctx, trs); err != nil {
		t.Fatal(err)
	}
	for _, q := range []AlarmStatsQuery{
		{Alarm: "lw/ghent", Class: "process", From: t0.Add(10 * time.Minute), To: t0.Add(3 * time.Hour), Window: 10 * time.Minute, Flood: 10, Stale: time.Hour},
		{From: t0, To: t0.Add(170 * time.Minute), Window: 5 * time.Minute, Flood: 4, Top: 3, ChatterCount: 4, ChatterWithin: 30 * time.Second, Stale: 30 * time.Minute},
		{Alarm: "lw/lyon/kiln1/_alarms/co_high", From: t0, To: t0.Add(4 * time.Hour), Window: time.Hour, Flood: 1},
	} {
		got, err := h.AlarmStats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		want := alarmStatsByHand(trs, q)
		if got.Raised != want.Raised || !reflect.DeepEqual(got.ByPriority, want.ByPriority) || got.Windows != want.Windows ||
			got.PerWindow != want.PerWindow || got.FloodShare != want.FloodShare || !reflect.DeepEqual(got.Floods, want.Floods) ||
			!reflect.DeepEqual(got.Frequent, want.Frequent) || got.TopShare != want.TopShare ||
			!reflect.DeepEqual(got.Chattering, want.Chattering) || !reflect.DeepEqual(got.Stale, want.Stale) {
			t.Fatalf("%+v:\ngot  %+v\nwant %+v", q, got, want)
		}
		if q.Flood == 10 && (len(got.Floods) == 0 || len(got.Chattering) == 0 || len(got.Stale) == 0) {
			t.Fatalf("the journal has no flood, chattering or stale alarm to find: %+v", got)
		}
	}
	if _, err := h.AlarmStats(ctx, AlarmStatsQuery{From: t0, To: t0, Window: time.Minute, Flood: 10}); err == nil {
		t.Error("an empty range gave no error")
	}
}

// alarmStatsByHand works the report out in Go from the transitions.
func alarmStatsByHand(trs []uns.Transition, q AlarmStatsQuery) AlarmStats {
	q.ChatterCount = cmp.Or(q.ChatterCount, 3)
	q.ChatterWithin = cmp.Or(q.ChatterWithin, time.Minute)
	q.Stale = cmp.Or(q.Stale, 24*time.Hour)
	q.Top = cmp.Or(q.Top, 10)
	in := func(tr uns.Transition) bool {
		return (q.Alarm == "" || tr.Alarm == q.Alarm || len(tr.Alarm) > len(q.Alarm) && tr.Alarm[:len(q.Alarm)+1] == q.Alarm+"/") &&
			(q.Class == "" || tr.Class == q.Class)
	}
	st := AlarmStats{ByPriority: map[string]int64{}, Floods: []AlarmFlood{}, Frequent: []AlarmCount{}, Chattering: []AlarmCount{}, Stale: []StaleAlarm{}}
	st.Windows = int64((q.To.Sub(q.From) + q.Window - 1) / q.Window)
	perWindow := map[int64]int64{}
	perAlarm := map[string][]time.Time{}
	prio := map[string]string{}
	for _, tr := range trs {
		if !in(tr) || tr.Event != uns.EventRaise || tr.TS.Before(q.From) || !tr.TS.Before(q.To) {
			continue
		}
		st.Raised++
		st.ByPriority[tr.Priority]++
		perWindow[int64(tr.TS.Sub(q.From)/q.Window)]++
		perAlarm[tr.Alarm] = append(perAlarm[tr.Alarm], tr.TS)
		prio[tr.Alarm] = tr.Priority
	}
	st.PerWindow.Average = float64(st.Raised) / float64(st.Windows)
	var flooded int64
	for w := range st.Windows {
		n := perWindow[w]
		st.PerWindow.Max = max(st.PerWindow.Max, n)
		if n <= int64(q.Flood) {
			continue
		}
		flooded++
		start := q.From.Add(time.Duration(w) * q.Window)
		if len(st.Floods) == 0 || perWindow[w-1] <= int64(q.Flood) || w == 0 {
			st.Floods = append(st.Floods, AlarmFlood{Start: start})
		}
		f := &st.Floods[len(st.Floods)-1]
		f.End = start.Add(q.Window)
		if f.End.After(q.To) {
			f.End = q.To
		}
		f.Raised += n
		f.Peak = max(f.Peak, n)
	}
	st.FloodShare = float64(flooded) / float64(st.Windows)
	var counts []AlarmCount
	for a, ts := range perAlarm {
		counts = append(counts, AlarmCount{Alarm: a, Priority: prio[a], Count: int64(len(ts))})
		slices.SortFunc(ts, func(x, y time.Time) int { return x.Compare(y) })
		var c int64
		for i := q.ChatterCount - 1; i < len(ts); i++ {
			if ts[i].Sub(ts[i-q.ChatterCount+1]) <= q.ChatterWithin {
				c++
			}
		}
		if c > 0 {
			st.Chattering = append(st.Chattering, AlarmCount{Alarm: a, Priority: prio[a], Count: c})
		}
	}
	byCount := func(s []AlarmCount) {
		sort.Slice(s, func(i, j int) bool {
			if s[i].Count != s[j].Count {
				return s[i].Count > s[j].Count
			}
			return s[i].Alarm < s[j].Alarm
		})
	}
	byCount(counts)
	byCount(st.Chattering)
	var top int64
	for i := range min(q.Top, len(counts)) {
		st.Frequent = append(st.Frequent, counts[i])
		top += counts[i].Count
	}
	if st.Raised > 0 {
		st.TopShare = float64(top) / float64(st.Raised)
	}
	type last struct {
		ts       time.Time
		ev, prio string
	}
	lasts := map[string]last{}
	for _, tr := range trs {
		if !in(tr) || !tr.TS.Before(q.To) || tr.Event != uns.EventRaise && tr.Event != uns.EventClear {
			continue
		}
		l, ok := lasts[tr.Alarm]
		if !ok || tr.TS.After(l.ts) || tr.TS.Equal(l.ts) && tr.Event == uns.EventClear {
			lasts[tr.Alarm] = last{tr.TS, tr.Event, tr.Priority}
		}
	}
	for a, l := range lasts {
		if l.ev == uns.EventRaise && l.ts.Before(q.To.Add(-q.Stale)) {
			st.Stale = append(st.Stale, StaleAlarm{Alarm: a, Priority: l.prio, Since: l.ts})
		}
	}
	sort.Slice(st.Stale, func(i, j int) bool {
		if !st.Stale[i].Since.Equal(st.Stale[j].Since) {
			return st.Stale[i].Since.Before(st.Stale[j].Since)
		}
		return st.Stale[i].Alarm < st.Stale[j].Alarm
	})
	return st
}
