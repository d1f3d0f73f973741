package historian

import (
	"context"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TestExceedances: a day's report holds the exceedances that overlap it,
// cut to the day, each with the highest value its tag reached meanwhile,
// and the seconds each alarm was exceeded.
func TestExceedances(t *testing.T) {
	ctx := context.Background()
	dev := "lw/ghent/kilns/line1/kiln1"
	tag := uns.Path(dev + "/co_mg")
	h := withTag(t, tag)
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(h, m int) time.Time { return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	v := func(f float64) *float64 { return &f }
	co := uns.AlarmPath(dev, "co_high")
	dust := uns.AlarmPath(dev, "dust_high")
	tr := func(alarm string, ts time.Time, ev string, val float64, class string) uns.Transition {
		return uns.Transition{Alarm: alarm, Tag: "co_mg", Kind: "high", Priority: "high", Class: class, TS: ts, Event: ev, Value: v(val), Limit: 100}
	}
	trs := []uns.Transition{
		tr(co, at(-2, 0), uns.EventRaise, 120, "emission"), // the day before, into the day
		tr(co, at(1, 0), uns.EventClear, 90, "emission"),
		tr(co, at(10, 0), uns.EventRaise, 105, "emission"), // within the day
		tr(co, at(10, 30), uns.EventClear, 95, "emission"),
		tr(co, at(23, 0), uns.EventRaise, 101, "emission"), // still exceeded at midnight
		tr(dust, at(12, 0), uns.EventRaise, 50, "process"), // another class
		tr(co, at(-5, 0), uns.EventRaise, 130, "emission"), // before the day, over before it: not in it
	}
	trs[6].Alarm = uns.AlarmPath(dev, "co_old")
	trs = append(trs, tr(trs[6].Alarm, at(-4, 0), uns.EventClear, 80, "emission"))
	if err := h.WriteTransitions(ctx, trs); err != nil {
		t.Fatal(err)
	}
	// The tag peaked at 180 in the second exceedance; 500 lies outside every one.
	if err := h.WriteBatch(ctx, []uns.Sample{
		{Path: tag, TS: at(10, 10), Value: uns.Float(180)},
		{Path: tag, TS: at(10, 20), Value: uns.Float(110)},
		{Path: tag, TS: at(15, 0), Value: uns.Float(500)},
	}); err != nil {
		t.Fatal(err)
	}

	rep, err := h.Exceedances(ctx, "emission", day.Add(7*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Day != "2026-12-01" || rep.Class != "emission" {
		t.Fatalf("report of %s, %s", rep.Day, rep.Class)
	}
	if len(rep.Exceedances) != 3 {
		t.Fatalf("%d exceedances: %+v", len(rep.Exceedances), rep.Exceedances)
	}
	want := []struct {
		start   time.Time
		ended   bool
		seconds float64
		peak    float64
	}{
		{at(-2, 0), true, 3600, 120},  // cut at midnight; no points: the value at the raise
		{at(10, 0), true, 1800, 180},  // the highest point within it
		{at(23, 0), false, 3600, 101}, // open: to the end of the day
	}
	for i, w := range want {
		e := rep.Exceedances[i]
		if !e.Start.Equal(w.start) || (e.End != nil) != w.ended || e.Seconds != w.seconds || e.Peak == nil || *e.Peak != w.peak {
			t.Errorf("exceedance %d: start %s end %v seconds %v peak %v; want %s %v %v %v", i, e.Start, e.End, e.Seconds, e.Peak, w.start, w.ended, w.seconds, w.peak)
		}
	}
	if got := rep.Seconds[co]; got != 9000 {
		t.Errorf("seconds exceeded %v, want 9000", got)
	}
	if _, ok := rep.Seconds[uns.AlarmPath(dev, "co_old")]; ok {
		t.Error("an exceedance over before the day is in its report")
	}
}
