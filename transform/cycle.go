package transform

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Cycle triggers: every rising edge of a boolean (or a number leaving 0),
// every increment of a counter, every entry into or exit from a state
// ends one cycle and starts the next; with While, a cycle runs while a
// state tag holds a value and the time between is no cycle.
const (
	TriggerRising    = "rising"
	TriggerIncrement = "increment"
	TriggerEnter     = "enter"
	TriggerLeave     = "leave"
	TriggerWhile     = "while"
)

// Triggers lists the trigger kinds.
var Triggers = []string{TriggerRising, TriggerIncrement, TriggerEnter, TriggerLeave, TriggerWhile}

// Aggregates of a tag over a cycle.
const (
	AggIntegral = "integral" // per hour: kWh from kW
	AggAvg      = "avg"      // time-weighted, the value held until the next
	AggMin      = "min"
	AggMax      = "max"
	AggFirst    = "first"
	AggLast     = "last"
	AggDelta    = "delta" // last - first: produced by a totalizer
	AggCount    = "count" // samples
)

// CycleAggs lists the aggregates.
var CycleAggs = []string{AggIntegral, AggAvg, AggMin, AggMax, AggFirst, AggLast, AggDelta, AggCount}

// CycleDef declares a production cycle of a device.
type CycleDef struct {
	Name       string        `yaml:"name" json:"name"`
	Tag        string        `yaml:"tag" json:"tag"`         // the trigger's tag
	Trigger    string        `yaml:"trigger" json:"trigger"` // rising, increment, enter, leave, while
	State      any           `yaml:"state" json:"state"`     // enter, leave, while: the state's value
	Aggregates []CycleAggDef `yaml:"aggregates" json:"aggregates"`
	MinLength  time.Duration `yaml:"min_length" json:"min_length"` // shorter cycles are not recorded (bounce)
}

// CycleAggDef is an aggregate of a tag over each cycle.
type CycleAggDef struct {
	Name string `yaml:"name" json:"name"`
	Tag  string `yaml:"tag" json:"tag"`
	Fn   string `yaml:"fn" json:"fn"`
	Unit string `yaml:"unit" json:"unit"`
}

// Validate checks the definition; at names it in errors.
func (d *CycleDef) Validate(at string) error {
	var errs []error
	if err := uns.ValidateSegment(d.Name); err != nil {
		errs = append(errs, fmt.Errorf("%s name: %w", at, err))
	}
	if d.Tag == "" {
		errs = append(errs, fmt.Errorf("%s tag: required (the trigger's tag)", at))
	}
	if !slices.Contains(Triggers, d.Trigger) {
		errs = append(errs, fmt.Errorf("%s trigger %q: one of %v", at, d.Trigger, Triggers))
	}
	if (d.Trigger == TriggerEnter || d.Trigger == TriggerLeave || d.Trigger == TriggerWhile) && d.State == nil {
		errs = append(errs, fmt.Errorf("%s state: required for trigger %s", at, d.Trigger))
	}
	names := map[string]bool{"duration_s": true}
	for i, a := range d.Aggregates {
		aat := fmt.Sprintf("%s aggregates[%d] (%s)", at, i, a.Name)
		if err := uns.ValidateSegment(a.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s name: %w", aat, err))
		}
		if names[a.Name] {
			errs = append(errs, fmt.Errorf("%s name: used twice (or duration_s, which every cycle has)", aat))
		}
		names[a.Name] = true
		if a.Tag == "" {
			errs = append(errs, fmt.Errorf("%s tag: required", aat))
		}
		if !slices.Contains(CycleAggs, a.Fn) {
			errs = append(errs, fmt.Errorf("%s fn %q: one of %v", aat, a.Fn, CycleAggs))
		}
	}
	return errors.Join(errs...)
}

// aggState accumulates one aggregate over the current cycle.
type aggState struct {
	Def      CycleAggDef `json:"def"`
	Int      Integral    `json:"int"`  // trapezoid area, for integral
	Step     float64     `json:"step"` // area with each value held until the next, for avg
	Secs     float64     `json:"secs"`
	Min      float64     `json:"min"`
	Max      float64     `json:"max"`
	First    float64     `json:"first"`
	HasFirst bool        `json:"has_first"`
	Last     float64     `json:"last"`
	N        int64       `json:"n"`
	// Held is the tag's value when the cycle started, carried in from
	// before; HasHeld whether there was one.
	Held    float64 `json:"held"`
	HasHeld bool    `json:"has_held"`
}

func (g *aggState) reset(at time.Time) {
	held, has := g.Held, g.HasHeld
	open := g.Int.Open
	*g = aggState{Def: g.Def, Held: held, HasHeld: has}
	if has && open {
		g.Int = Integral{Last: held, LastTS: at, Open: true}
		g.Min, g.Max, g.First, g.Last, g.HasFirst = held, held, held, held, true
	}
}

func (g *aggState) add(s uns.Sample) {
	f, ok := s.Value.AsFloat()
	if s.Quality == uns.Bad || !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		g.Int.Break(s.TS)
		return
	}
	openBefore := g.Int.Open
	startTS, held := g.Int.LastTS, g.Int.Last
	if !g.Int.Add(s.TS, f) {
		return
	}
	if openBefore {
		dt := s.TS.Sub(startTS).Seconds()
		g.Secs += dt
		g.Step += held * dt
	}
	if !g.HasFirst {
		g.First, g.Min, g.Max, g.HasFirst = f, f, f, true
	}
	g.Min, g.Max, g.Last = math.Min(g.Min, f), math.Max(g.Max, f), f
	g.N++
	g.Held, g.HasHeld = f, true
}

// close returns the aggregate's value at the end of a cycle.
func (g *aggState) close(end time.Time) (float64, bool) {
	if g.Int.Open && end.After(g.Int.LastTS) {
		dt := end.Sub(g.Int.LastTS).Seconds()
		g.Secs += dt
		g.Step += g.Int.Last * dt
		g.Int.HoldTo(end)
	}
	if !g.HasFirst {
		return 0, false // no value in the cycle
	}
	switch g.Def.Fn {
	case AggIntegral:
		return g.Int.Sum / 3600, true
	case AggAvg:
		if g.Secs <= 0 {
			return g.Last, true
		}
		return g.Step / g.Secs, true
	case AggMin:
		return g.Min, true
	case AggMax:
		return g.Max, true
	case AggFirst:
		return g.First, true
	case AggLast:
		return g.Last, true
	case AggDelta:
		return g.Last - g.First, true
	case AggCount:
		return float64(g.N), true
	}
	return 0, false
}

// Cycler detects the cycles of one machine and aggregates over them. Feed
// it every sample of the machine's tags in time order.
type Cycler struct {
	Def     CycleDef    `json:"def"`
	Machine string      `json:"machine"`
	Running bool        `json:"running"` // a cycle has started and not ended
	Start   time.Time   `json:"start"`
	Aggs    []*aggState `json:"aggs"`
	// The trigger tag's last value.
	Prev    float64   `json:"prev"`
	PrevS   string    `json:"prev_s"`
	HasPrev bool      `json:"has_prev"`
	LastTS  time.Time `json:"last_ts"` // of the trigger tag
	// Dropped counts samples that came older than their tag's last.
	Dropped int64 `json:"dropped"`
}

// NewCycler makes the cycle detector of a machine.
func NewCycler(machine string, d CycleDef) *Cycler {
	c := &Cycler{Def: d, Machine: machine}
	for _, a := range d.Aggregates {
		g := &aggState{Def: a}
		g.reset(time.Time{})
		c.Aggs = append(c.Aggs, g)
	}
	return c
}

// Tags are the device's tags the cycler reads.
func (c *Cycler) Tags() []string {
	out := []string{c.Def.Tag}
	for _, a := range c.Def.Aggregates {
		if !slices.Contains(out, a.Tag) {
			out = append(out, a.Tag)
		}
	}
	return out
}

// Observe feeds a sample of tag (a name of the machine's tags); it returns
// the cycle that the sample ends, if any. At a boundary the aggregates
// take the sample's values of the same instant that came before it only:
// feed a boundary's instant's samples of other tags first when they are
// to count in the ending cycle.
func (c *Cycler) Observe(tag string, s uns.Sample) (Cycle, bool) {
	var done Cycle
	var ended bool
	if tag == c.Def.Tag {
		if !c.LastTS.IsZero() && s.TS.Before(c.LastTS) {
			c.Dropped++
		} else {
			c.LastTS = s.TS
			start, end, reset := c.edge(s)
			if end && c.Running {
				done, ended = c.finish(s.TS)
			}
			if end || reset {
				c.Running = false
			}
			if start {
				c.Running, c.Start = true, s.TS
				for _, g := range c.Aggs {
					g.reset(s.TS)
				}
			}
		}
	}
	for _, g := range c.Aggs {
		if g.Def.Tag == tag {
			if !g.Int.LastTS.IsZero() && s.TS.Before(g.Int.LastTS) {
				c.Dropped++
				continue
			}
			g.add(s)
		}
	}
	return done, ended
}

// edge says whether the trigger's sample ends a cycle and starts one, or,
// for a counter that went back (a PLC restarted), drops the cycle under way:
// it is not known where it ended.
func (c *Cycler) edge(s uns.Sample) (start, end, reset bool) {
	if s.Quality == uns.Bad {
		return false, false, false
	}
	f, num := s.Value.AsFloat()
	str := ""
	if s.Value.Kind == uns.KindString {
		str, num = s.Value.S, false
	}
	was, wasS, had := c.Prev, c.PrevS, c.HasPrev
	c.Prev, c.PrevS, c.HasPrev = f, str, true
	if !had {
		if c.Def.Trigger == TriggerWhile && stateMatches(c.Def.State, f, str) {
			return true, false, false // in the state already: its cycle starts now
		}
		return false, false, false
	}
	switch c.Def.Trigger {
	case TriggerRising:
		b := num && f != 0
		return b && was == 0, b && was == 0, false
	case TriggerIncrement:
		b := num && f > was
		return b, b, num && f < was
	case TriggerEnter:
		b := stateMatches(c.Def.State, f, str) && !stateMatches(c.Def.State, was, wasS)
		return b, b, false
	case TriggerLeave:
		b := !stateMatches(c.Def.State, f, str) && stateMatches(c.Def.State, was, wasS)
		return b, b, false
	case TriggerWhile:
		now, before := stateMatches(c.Def.State, f, str), stateMatches(c.Def.State, was, wasS)
		return now && !before, !now && before, false
	}
	return false, false, false
}

func (c *Cycler) finish(end time.Time) (Cycle, bool) {
	cy := Cycle{Machine: c.Machine, Name: c.Def.Name, Start: c.Start, End: end, Values: map[string]float64{}}
	for _, g := range c.Aggs {
		if v, ok := g.close(end); ok {
			cy.Values[g.Def.Name] = v
		}
	}
	cy.Values["duration_s"] = end.Sub(c.Start).Seconds()
	if end.Sub(c.Start) < c.Def.MinLength {
		return Cycle{}, false
	}
	return cy, true
}
