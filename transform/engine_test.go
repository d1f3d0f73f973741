package transform

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

const kiln = "limeworks/ghent/kilns/line1/kiln1"

func kilnDevice() Device {
	return Device{
		Path: kiln,
		Calculated: []CalcDef{
			{Name: "energy_kwh", Expr: "integral(power_kw)", Unit: "kWh"},
			{Name: "specific_energy", Expr: "power_kw * 1000 / max(production_tph, 0.1)", Unit: "kWh/t"},
			{Name: "co_1h", Expr: `avg_over(co_mg, "1h")`, Unit: "mg/Nm3"},
			{Name: "temp_rate", Expr: `rate(temp, "10s") * 60`, Unit: "°C/min"},
			{Name: "temp_f", Expr: `convert(temp, "degC", "degF")`, Unit: "°F"},
		},
		Cycles: []CycleDef{{Name: "burn", Tag: "cycles", Trigger: TriggerIncrement, Aggregates: []CycleAggDef{
			{Name: "energy_kwh", Tag: "power_kw", Fn: AggIntegral, Unit: "kWh"},
			{Name: "max_co", Tag: "co_mg", Fn: AggMax},
		}}},
		Alarms: []AlarmDef{
			{Name: "co_high", Tag: "co_mg", Kind: KindHigh, Limit: 500, Deadband: 50, OnDelay: 5 * time.Second},
			{Name: "co_hourly", Tag: "co_1h", Kind: KindHigh, Limit: 300, Class: "emission"},
		},
	}
}

func sample(tag string, s float64, v float64) uns.Sample {
	return uns.Sample{Path: uns.Path(kiln + "/" + tag), TS: at(s), Value: uns.Float(v), Quality: uns.Good}
}

// kilnRun is an hour of a kiln at 1 Hz: power 100 + t/36 kW, a CO
// excursion from 1210 s to 1500 s, a cycle every 600 s.
func kilnRun(from, to int) [][]uns.Sample {
	var out [][]uns.Sample
	for i := from; i < to; i++ {
		s := float64(i)
		co := 100.0
		if i >= 1210 && i < 1500 {
			co = 900
		}
		b := []uns.Sample{sample("power_kw", s, 100+s/36), sample("co_mg", s, co), sample("temp", s, 1000+s/10), sample("production_tph", s, 20)}
		if i%600 == 0 {
			b = append(b, uns.Sample{Path: kiln + "/cycles", TS: at(s), Value: uns.Int(int64(i / 600)), Quality: uns.Good})
		}
		out = append(out, b)
	}
	return out
}

func TestEngineCalculatedAlarmsCycles(t *testing.T) {
	e, err := NewEngine([]Device{kilnDevice()})
	if err != nil {
		t.Fatal(err)
	}
	var all Output
	last := map[uns.Path]uns.Sample{}
	for _, b := range kilnRun(0, 3601) {
		o := e.Process(b, time.Time{})
		for _, s := range o.Samples {
			last[s.Path] = s
		}
		all.add(o)
	}
	if len(all.Errors) > 0 {
		t.Fatal(all.Errors)
	}
	// integral of 100 + t/36 over an hour: 100 + 50 = 150 kWh.
	if v := last[kiln+"/energy_kwh"].Value.F; math.Abs(v-150) > 1e-6 {
		t.Errorf("energy %v kWh, want 150", v)
	}
	if v := last[kiln+"/specific_energy"].Value.F; math.Abs(v-(200*1000/20)) > 1e-6 {
		t.Errorf("specific energy %v", v)
	}
	if v := last[kiln+"/temp_rate"].Value.F; math.Abs(v-6) > 1e-9 {
		t.Errorf("temperature rate %v °C/min, want 6", v)
	}
	if v := last[kiln+"/temp_f"].Value.F; math.Abs(v-(1360*9.0/5+32)) > 1e-9 {
		t.Errorf("°F %v", v)
	}
	// The hourly CO average: 300 s at 900 and 3300 s at 100 over the hour.
	if v := last[kiln+"/co_1h"].Value.F; math.Abs(v-(290*900+3310*100)/3600.0) > 0.5 {
		t.Errorf("co_1h %v", v)
	}
	// Cycles 600-1200 ... 3000-3600: five, each with its energy.
	if len(all.Cycles) != 5 {
		t.Fatalf("%d cycles", len(all.Cycles))
	}
	for _, c := range all.Cycles {
		a, b := c.Start.Sub(t0).Seconds(), c.End.Sub(t0).Seconds()
		want := (100*(b-a) + (b*b-a*a)/72) / 3600
		if got := c.Values["energy_kwh"]; math.Abs(got-want) > 1e-9 {
			t.Errorf("cycle %v-%v: %v kWh, want %v", a, b, got, want)
		}
	}
	if all.Cycles[1].Values["max_co"] != 900 || all.Cycles[0].Values["max_co"] != 100 {
		t.Errorf("max co per cycle: %v %v", all.Cycles[0].Values, all.Cycles[1].Values)
	}
	if s, ok := last[kiln+"/_cycles/burn/energy_kwh"]; !ok || !s.TS.Equal(at(3600)) {
		t.Errorf("last cycle's tag %+v", s)
	}
	// CO high raises 5 s after the excursion starts and clears when it
	// ends; the hourly average stays below its limit of 300 (about 164).
	var trs []string
	for _, tr := range all.Transitions {
		trs = append(trs, fmt.Sprintf("%s %s@%g", tr.Alarm[len(kiln)+1:], tr.Event, tr.TS.Sub(t0).Seconds()))
	}
	if got := strings.Join(trs, ", "); got != "_alarms/co_high raise@1215, _alarms/co_high clear@1500" {
		t.Errorf("transitions: %s", got)
	}
	st := e.Alarms(at(3600))
	if len(st) != 2 || st[0].Name != "co_high" || st[0].State != StateClearedUnack || st[1].State != StateNormal {
		t.Fatalf("alarms %+v", st)
	}
	if _, err := e.Ack(kiln+"/_alarms/co_high", at(3700), "op", "checked the analyser"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Ack(kiln+"/_alarms/nope", at(3700), "op", ""); err == nil {
		t.Fatal("ack of an unknown alarm")
	}
}

// Stopping anywhere and restarting from a snapshot gives what one
// uninterrupted run gives, also when the samples after the snapshot come
// again (a redelivery).
func TestEngineSnapshotRestore(t *testing.T) {
	run := kilnRun(0, 2000)
	whole, err := NewEngine([]Device{kilnDevice()})
	if err != nil {
		t.Fatal(err)
	}
	var want Output
	for _, b := range run {
		want.add(whole.Process(b, time.Time{}))
	}
	for _, cut := range []int{1, 599, 600, 1203, 1350} {
		e, _ := NewEngine([]Device{kilnDevice()})
		var got Output
		for _, b := range run[:cut] {
			got.add(e.Process(b, time.Time{}))
		}
		snap, err := e.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		e2, _ := NewEngine([]Device{kilnDevice()})
		if err := e2.Restore(snap); err != nil {
			t.Fatal(err)
		}
		for _, b := range run[cut:] {
			got.add(e2.Process(b, time.Time{}))
		}
		if !reflect.DeepEqual(got.Cycles, want.Cycles) || !reflect.DeepEqual(transitions(got), transitions(want)) {
			t.Fatalf("cut at %d: cycles %v / %v, transitions %v / %v", cut, got.Cycles, want.Cycles, transitions(got), transitions(want))
		}
		if len(got.Samples) != len(want.Samples) {
			t.Fatalf("cut at %d: %d samples, want %d", cut, len(got.Samples), len(want.Samples))
		}
		for i := range got.Samples {
			g, w := got.Samples[i], want.Samples[i]
			if g.Path != w.Path || !g.TS.Equal(w.TS) || math.Abs(g.Value.F-w.Value.F) > 1e-9 {
				t.Fatalf("cut at %d: sample %d %+v, want %+v", cut, i, g, w)
			}
		}
	}
}

func transitions(o Output) []string {
	var out []string
	for _, tr := range o.Transitions {
		out = append(out, fmt.Sprintf("%s %s %s", tr.Alarm, tr.Event, tr.TS))
	}
	return out
}

func TestCalcBadInputsAndErrors(t *testing.T) {
	e, err := NewEngine([]Device{{Path: kiln, Calculated: []CalcDef{
		{Name: "energy_kwh", Expr: "integral(power_kw)"},
		{Name: "ratio", Expr: "power_kw / fuel"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	o := e.Process([]uns.Sample{sample("power_kw", 0, 100), sample("power_kw", 3600, 100)}, time.Time{})
	if v := o.Samples[len(o.Samples)-2]; v.Path != kiln+"/energy_kwh" || v.Value.F != 100 {
		t.Fatalf("%+v", o.Samples)
	}
	// ratio has no fuel yet: bad, and says why.
	if v := o.Samples[len(o.Samples)-1]; v.Quality != uns.Bad || o.Reasons[kiln+"/ratio"] != "input fuel has no value yet" {
		t.Fatalf("ratio without an input: %+v %q", v, o.Reasons[kiln+"/ratio"])
	}
	// A bad power: the output is bad, and the hour after it is not integrated.
	o = e.Process([]uns.Sample{{Path: kiln + "/power_kw", TS: at(3601), Value: uns.Null, Quality: uns.Bad}}, time.Time{})
	if o.Samples[0].Quality != uns.Bad || o.Reasons[kiln+"/energy_kwh"] != "input power_kw is bad" {
		t.Fatalf("bad input, output %+v %v", o.Samples[0], o.Reasons)
	}
	o = e.Process([]uns.Sample{sample("power_kw", 7201, 100), sample("power_kw", 10801, 100)}, time.Time{})
	if v := o.Samples[2]; math.Abs(v.Value.F-(100+100.0/3600+100)) > 1e-9 {
		t.Fatalf("energy after a gap %v", v.Value.F)
	}
	// Historical and older than the integral's state: left out.
	o = e.Process([]uns.Sample{{Path: kiln + "/power_kw", TS: at(5000), Value: uns.Float(1), Quality: uns.Good, Historical: true}}, time.Time{})
	for _, s := range o.Samples {
		if s.Path == kiln+"/energy_kwh" {
			t.Fatalf("late value integrated: %+v", s)
		}
	}
	for _, bad := range []CalcDef{
		{Name: "a", Expr: `avg_over(x, w)`},
		{Name: "a", Expr: `avg_over(x, "soon")`},
		{Name: "a", Expr: `integral(x, "fortnight")`},
		{Name: "a", Expr: `x +* 2`},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%s compiled", bad.Expr)
		}
	}
	if names, _ := identifiers(`integral(power_kw) + avg_over(co, "1h") * max(a, 1)`); fmt.Sprint(names) != "[power_kw co a]" {
		t.Errorf("identifiers %v", names)
	}
}

// After an outage the stream brings live values first and the edge's
// backlog (historical) beside them: the engine holds the live values and
// gets what one run in time order gets.
func TestEngineReordersBacklog(t *testing.T) {
	run := kilnRun(0, 2400)
	whole, _ := NewEngine([]Device{kilnDevice()})
	var want Output
	for _, b := range run {
		want.add(whole.Process(b, time.Time{}))
	}
	e, _ := NewEngine([]Device{kilnDevice()})
	e.SetReorder(DefaultReorder)
	var got Output
	clock := t0
	step := func(b []uns.Sample) {
		clock = clock.Add(50 * time.Millisecond)
		got.add(e.Process(b, clock))
		got.add(e.Tick(clock))
	}
	for _, b := range run[:1190] {
		step(b)
	}
	// Down from 1190 s (the CO excursion starts at 1210 s, a cycle ends at
	// 1200 s) to 1300 s. The backlog repeats the 10 s before the outage.
	historical := func(b []uns.Sample) []uns.Sample {
		out := slices.Clone(b)
		for i := range out {
			out[i].Historical = true
		}
		return out
	}
	live, backlog := run[1300:1400], run[1180:1300]
	for i := 0; i < len(live) || i < len(backlog); i++ {
		if i < len(live) {
			step(live[i])
		}
		if i < len(backlog) {
			step(historical(backlog[i]))
		}
	}
	for _, b := range run[1400:] {
		step(b)
	}
	clock = clock.Add(time.Minute)
	got.add(e.Tick(clock))
	if !reflect.DeepEqual(got.Cycles, want.Cycles) {
		t.Fatalf("cycles:\n%v\nwant\n%v", got.Cycles, want.Cycles)
	}
	if !reflect.DeepEqual(transitions(got), transitions(want)) {
		t.Fatalf("transitions:\n%v\nwant\n%v", transitions(got), transitions(want))
	}
	if e.Late() == 0 {
		t.Fatal("the repeated values were not counted late")
	}
}

// A rolling average is uncertain until its window is mostly covered, and
// an alarm that asks for good values waits for it.
func TestWindowCoverageAndGoodOnlyAlarm(t *testing.T) {
	e, err := NewEngine([]Device{{Path: kiln,
		Calculated: []CalcDef{{Name: "co_1m", Expr: `avg_over(co_mg, "1m")`}},
		Alarms: []AlarmDef{
			{Name: "strict", Tag: "co_1m", Kind: KindHigh, Limit: 100, GoodOnly: true},
			{Name: "eager", Tag: "co_1m", Kind: KindHigh, Limit: 100},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	var raised []string
	for s := 0; s <= 60; s++ {
		o := e.Process([]uns.Sample{sample("co_mg", float64(s), 200)}, time.Time{})
		q := o.Samples[0].Quality
		if want := s >= 45; (q == uns.Good) != want {
			t.Fatalf("at %d s the average is %s", s, q)
		}
		for _, tr := range o.Transitions {
			raised = append(raised, fmt.Sprintf("%s@%d", tr.Alarm[len(kiln)+len("/_alarms/"):], s))
		}
	}
	if fmt.Sprint(raised) != "[eager@0 strict@45]" {
		t.Fatalf("raised %v", raised)
	}
}

// Reads names the tags a transform reads, so a reader of the backbone can
// leave the others undecoded; asking costs no allocation.
func TestEngineReads(t *testing.T) {
	e, err := NewEngine([]Device{kilnDevice()})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		kiln + "/power_kw":    true,
		kiln + "/co_mg":       true,
		kiln + "/cycles":      true,
		kiln + "/unused_tag":  false,
		kiln + "x/power_kw":   false,
		"limeworks/lyon/a/b/": false,
	} {
		if e.Reads([]byte(p)) != want {
			t.Errorf("Reads(%s) = %v, want %v", p, !want, want)
		}
	}
	path := []byte(kiln + "/power_kw")
	if n := testing.AllocsPerRun(100, func() { e.Reads(path) }); n != 0 {
		t.Errorf("Reads allocates %v times", n)
	}
}

// The engine routes the tag of an alarm's suppress_when to it, and lists
// the alarm as suppressed.
func TestEngineSuppressesByDesign(t *testing.T) {
	e, err := NewEngine([]Device{{Path: kiln, Alarms: []AlarmDef{
		{Name: "temp_low", Tag: "temp", Kind: KindLow, Limit: 800, SuppressWhen: &Suppression{Tag: "running", State: false}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if !e.Reads([]byte(kiln + "/running")) {
		t.Fatal("the engine does not read the tag that suppresses an alarm")
	}
	var events []string
	for s, smp := range []uns.Sample{
		{Path: kiln + "/running", TS: at(0), Value: uns.Bool(false), Quality: uns.Good},
		sample("temp", 1, 20),
		{Path: kiln + "/running", TS: at(2), Value: uns.Bool(true), Quality: uns.Good},
	} {
		for _, tr := range e.Process([]uns.Sample{smp}, time.Time{}).Transitions {
			events = append(events, fmt.Sprintf("%s@%d", tr.Event, s))
		}
		if s == 1 && !e.Alarms(at(1))[0].Suppressed {
			t.Fatal("the alarm is not listed as suppressed")
		}
	}
	if fmt.Sprint(events) != "[suppress@0 unsuppress@2 raise@2]" {
		t.Fatalf("events %v", events)
	}
	// The kiln stops; a new limit makes the alarm afresh, suppressed as the
	// kiln's state is now, though that state does not come again.
	e.Process([]uns.Sample{{Path: kiln + "/running", TS: at(3), Value: uns.Bool(false), Quality: uns.Good}}, time.Time{})
	snap, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	e2, err := NewEngine([]Device{{Path: kiln, Alarms: []AlarmDef{
		{Name: "temp_low", Tag: "temp", Kind: KindLow, Limit: 700, SuppressWhen: &Suppression{Tag: "running", State: false}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if !e2.Alarms(at(4))[0].Suppressed {
		t.Fatal("the alarm made afresh is not suppressed while the kiln is stopped")
	}
	if trs := e2.Process([]uns.Sample{sample("temp", 5, 20)}, time.Time{}).Transitions; len(trs) != 0 {
		t.Fatalf("a suppressed alarm made afresh raised: %+v", trs)
	}
}

// First out: while an alarm is active, the alarms it suppresses do not
// raise, even from the sample that raised it; they follow its clear.
func TestEngineAlarmSuppressesAlarm(t *testing.T) {
	e, err := NewEngine([]Device{{Path: kiln, Alarms: []AlarmDef{
		{Name: "co_h", Tag: "co", Kind: KindHigh, Limit: 100, SuppressWhen: &Suppression{Alarm: "co_hh"}},
		{Name: "co_hh", Tag: "co", Kind: KindHighHigh, Limit: 200},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for s, v := range []float64{250, 150, 50} {
		for _, tr := range e.Process([]uns.Sample{sample("co", float64(s), v)}, time.Time{}).Transitions {
			events = append(events, fmt.Sprintf("%s:%s@%d", tr.Alarm[len(kiln)+len("/_alarms/"):], tr.Event, s))
		}
	}
	if want := "[co_hh:raise@0 co_h:suppress@0 co_hh:clear@1 co_h:unsuppress@1 co_h:raise@1 co_h:clear@2]"; fmt.Sprint(events) != want {
		t.Fatalf("events %v\nwant   %s", events, want)
	}
	// A restart with co_hh active again keeps co_h suppressed.
	e.Process([]uns.Sample{sample("co", 3, 300)}, time.Time{})
	snap, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	e2, err := NewEngine([]Device{{Path: kiln, Alarms: []AlarmDef{
		{Name: "co_h", Tag: "co", Kind: KindHigh, Limit: 120, SuppressWhen: &Suppression{Alarm: "co_hh"}},
		{Name: "co_hh", Tag: "co", Kind: KindHighHigh, Limit: 200},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	for _, a := range e2.Alarms(at(4)) {
		if a.Name == "co_h" && !a.Suppressed {
			t.Fatal("co_h made afresh is not suppressed while co_hh is active")
		}
	}
	if _, err := NewEngine([]Device{{Path: kiln, Alarms: []AlarmDef{
		{Name: "co_h", Tag: "co", Kind: KindHigh, Limit: 100, SuppressWhen: &Suppression{Alarm: "nosuch"}},
	}}}); err == nil || !strings.Contains(err.Error(), "no such alarm") {
		t.Fatalf("a suppressing alarm that does not exist: %v", err)
	}
}
