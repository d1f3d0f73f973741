package transform

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Alarm kinds.
const (
	KindHighHigh  = "high_high"
	KindHigh      = "high"
	KindLow       = "low"
	KindLowLow    = "low_low"
	KindDeviation = "deviation" // |value - setpoint| above the limit
	KindRate      = "rate"      // |rate of change| per second above the limit
	KindState     = "state"     // the value equals State (a boolean, number or string)
	KindStale     = "stale"     // no new value within After
)

// AlarmKinds lists the kinds, for checks and messages.
var AlarmKinds = []string{KindHighHigh, KindHigh, KindLow, KindLowLow, KindDeviation, KindRate, KindState, KindStale}

// AlarmDef is an alarm of a device's tag, as a template or an instance
// declares it.
type AlarmDef struct {
	Name     string        `yaml:"name" json:"name"`
	Tag      string        `yaml:"tag" json:"tag"` // a tag of the device (calculated ones too)
	Kind     string        `yaml:"kind" json:"kind"`
	Limit    float64       `yaml:"limit" json:"limit"`
	Deadband float64       `yaml:"deadband" json:"deadband"`   // the value must come back this far past the limit to clear
	Setpoint string        `yaml:"setpoint" json:"setpoint"`   // deviation: a tag of the device, or a number
	State    any           `yaml:"state" json:"state"`         // state: the value that is the alarm
	RateOver time.Duration `yaml:"rate_over" json:"rate_over"` // rate: over this window (0: between two samples)
	After    time.Duration `yaml:"after" json:"after"`         // stale: no value for this long
	OnDelay  time.Duration `yaml:"on_delay" json:"on_delay"`   // the condition must hold this long to raise
	OffDelay time.Duration `yaml:"off_delay" json:"off_delay"` // and be gone this long to clear
	Priority string        `yaml:"priority" json:"priority"`
	Message  string        `yaml:"message" json:"message"`
	// Class groups alarms for reports, e.g. "emission".
	Class string `yaml:"class" json:"class"`
	// Disabled turns off an alarm a template declares, for one instance.
	Disabled bool `yaml:"disabled" json:"disabled,omitempty"`
	// GoodOnly holds the alarm where it is on uncertain values as on bad
	// ones: a rolling average's limit counts only once the window is
	// covered.
	GoodOnly bool `yaml:"good_only" json:"good_only,omitempty"`
	// SuppressWhen suppresses the alarm by design while the plant is in a
	// state that makes it meaningless (a kiln stopped: its low temperature
	// is no alarm).
	SuppressWhen *Suppression `yaml:"suppress_when,omitempty" json:"suppress_when,omitempty"`
}

// Suppression names what suppresses an alarm: while the device's tag Tag
// equals State (a boolean, a number or a string), or while Alarm, another
// alarm of the device, is active (a trip suppressing its consequences),
// the alarm does not raise, and an active alarm clears when it begins.
type Suppression struct {
	Tag   string `yaml:"tag,omitempty" json:"tag,omitempty"`
	State any    `yaml:"state,omitempty" json:"state,omitempty"`
	Alarm string `yaml:"alarm,omitempty" json:"alarm,omitempty"`
}

// Validate checks the definition; at names it in errors.
func (d *AlarmDef) Validate(at string) error {
	var errs []error
	if err := uns.ValidateSegment(d.Name); err != nil {
		errs = append(errs, fmt.Errorf("%s name: %w", at, err))
	}
	if d.Tag == "" {
		errs = append(errs, fmt.Errorf("%s tag: required", at))
	}
	if !slices.Contains(AlarmKinds, d.Kind) {
		errs = append(errs, fmt.Errorf("%s kind %q: one of %v", at, d.Kind, AlarmKinds))
	}
	if d.Priority != "" && !slices.Contains(Priorities, d.Priority) {
		errs = append(errs, fmt.Errorf("%s priority %q: one of %v", at, d.Priority, Priorities))
	}
	if d.Deadband < 0 || math.IsNaN(d.Deadband) {
		errs = append(errs, fmt.Errorf("%s deadband %v: must not be negative", at, d.Deadband))
	}
	if d.OnDelay < 0 || d.OffDelay < 0 || d.RateOver < 0 {
		errs = append(errs, fmt.Errorf("%s: delays and windows must not be negative", at))
	}
	if sw := d.SuppressWhen; sw != nil {
		switch {
		case sw.Alarm != "" && (sw.Tag != "" || sw.State != nil):
			errs = append(errs, fmt.Errorf("%s suppress_when: a tag and its state, or an alarm, not both", at))
		case sw.Alarm == d.Name:
			errs = append(errs, fmt.Errorf("%s suppress_when alarm %q: an alarm cannot suppress itself", at, sw.Alarm))
		case sw.Alarm == "" && (sw.Tag == "" || sw.State == nil):
			errs = append(errs, fmt.Errorf("%s suppress_when: needs a tag and the state that suppresses the alarm, or an alarm", at))
		}
	}
	switch d.Kind {
	case KindDeviation:
		if d.Setpoint == "" {
			errs = append(errs, fmt.Errorf("%s setpoint: required for a deviation alarm (a tag or a number)", at))
		}
	case KindState:
		if d.State == nil {
			errs = append(errs, fmt.Errorf("%s state: required for a state alarm (the value that is the alarm)", at))
		}
	case KindStale:
		if d.After <= 0 {
			errs = append(errs, fmt.Errorf("%s after: required for a stale alarm (a duration)", at))
		}
	}
	return errors.Join(errs...)
}

// Alarm is an alarm's state. Feed it the samples of its tag (and of its
// setpoint tag) in time order with Observe, and the clock with Tick; it
// returns the transitions that follow.
type Alarm struct {
	Def  AlarmDef `json:"def"`
	Path string   `json:"path"`

	Active bool `json:"active"`
	Acked  bool `json:"acked"`
	// ShelvedUntil hides the alarm until then: it changes state but is not
	// annunciated (Annunciated is false).
	ShelvedUntil time.Time `json:"shelved_until"`
	// Suppressed is true while the plant is in the state of
	// Def.SuppressWhen: the alarm does not raise. SuppressTS is the time
	// of the last sample of its tag.
	Suppressed bool      `json:"suppressed"`
	SuppressTS time.Time `json:"suppress_ts"`

	// Cond is whether the condition held at the last sample; CondSince
	// when it last changed (for the on and off delays).
	Cond      bool      `json:"cond"`
	CondSince time.Time `json:"cond_since"`
	LastTS    time.Time `json:"last_ts"` // of the tag's last sample
	Value     float64   `json:"value"`
	Text      string    `json:"text"`
	HasValue  bool      `json:"has_value"`
	Setpoint  float64   `json:"setpoint"`
	HasSP     bool      `json:"has_sp"`
	Rate      Rate      `json:"rate"`
	Since     time.Time `json:"since"` // of the current state
}

// NewAlarm makes the state of an alarm of the device at path.
func NewAlarm(device string, d AlarmDef) *Alarm {
	if d.Priority == "" {
		d.Priority = "medium"
	}
	a := &Alarm{Def: d, Path: uns.AlarmPath(device, d.Name), Acked: true}
	a.Rate.Window = d.RateOver
	if d.Kind == KindDeviation {
		if _, err := fmt.Sscan(d.Setpoint, &a.Setpoint); err == nil {
			a.HasSP = true
		}
	}
	return a
}

// SetpointTag is the tag a deviation alarm compares with, "" for none.
func (a *Alarm) SetpointTag() string {
	if a.Def.Kind != KindDeviation {
		return ""
	}
	var f float64
	if _, err := fmt.Sscan(a.Def.Setpoint, &f); err == nil {
		return ""
	}
	return a.Def.Setpoint
}

// State is the alarm's ISA-18.2 state.
func (a *Alarm) State() AlarmState {
	switch {
	case a.Active && !a.Acked:
		return StateUnacked
	case a.Active:
		return StateAcked
	case !a.Acked:
		return StateClearedUnack
	}
	return StateNormal
}

// Shelved reports whether the alarm is shelved at t.
func (a *Alarm) Shelved(t time.Time) bool { return t.Before(a.ShelvedUntil) }

func (a *Alarm) transition(ts time.Time, event string) Transition {
	tr := Transition{Alarm: a.Path, Tag: a.Def.Tag, Kind: a.Def.Kind, Priority: a.Def.Priority, Class: a.Def.Class,
		TS: ts, Event: event, State: a.State(), Limit: a.Def.Limit, Text: a.Text}
	if a.HasValue {
		v := a.Value
		tr.Value = &v
	}
	if tr.Text == "" {
		tr.Text = a.Def.Message
	}
	if !a.ShelvedUntil.IsZero() && ts.Before(a.ShelvedUntil) {
		u := a.ShelvedUntil
		tr.Shelved = &u
	}
	return tr
}

// condition evaluates the alarm's condition on its value, with the
// deadband when it is active (hysteresis).
func (a *Alarm) condition() bool {
	d, v := a.Def, a.Value
	switch d.Kind {
	case KindHigh, KindHighHigh:
		if a.Cond {
			return v > d.Limit-d.Deadband
		}
		return v > d.Limit
	case KindLow, KindLowLow:
		if a.Cond {
			return v < d.Limit+d.Deadband
		}
		return v < d.Limit
	case KindDeviation:
		if !a.HasSP {
			return false
		}
		dev := math.Abs(v - a.Setpoint)
		if a.Cond {
			return dev > d.Limit-d.Deadband
		}
		return dev > d.Limit
	case KindState:
		return stateMatches(d.State, a.Value, a.Text)
	}
	return false
}

func stateMatches(want any, f float64, s string) bool {
	switch w := want.(type) {
	case bool:
		if s != "" {
			return s == fmt.Sprint(w)
		}
		return (f != 0) == w
	case int:
		return s == "" && f == float64(w)
	case int64:
		return s == "" && f == float64(w)
	case float64:
		return s == "" && f == w
	case string:
		if s != "" {
			return s == w
		}
		var g float64
		if _, err := fmt.Sscan(w, &g); err == nil {
			return f == g
		}
		return (w == "true" && f != 0) || (w == "false" && f == 0)
	}
	return false
}

// ObserveSetpoint records a new value of a deviation alarm's setpoint tag.
func (a *Alarm) ObserveSetpoint(s uns.Sample) []Transition {
	f, ok := s.Value.AsFloat()
	if !ok || s.Quality == uns.Bad || math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	a.Setpoint, a.HasSP = f, true
	if !a.HasValue {
		return nil
	}
	return a.update(s.TS, a.condition())
}

// Observe feeds a sample of the alarm's tag. A bad sample holds the alarm
// where it is (a bad value is not a clear), except for a stale alarm,
// which it makes a change like any other. A sample older than the last is
// ignored.
func (a *Alarm) Observe(s uns.Sample) []Transition {
	if !a.LastTS.IsZero() && s.TS.Before(a.LastTS) {
		return nil
	}
	a.LastTS = s.TS
	if a.Def.Kind == KindStale {
		if s.Quality == uns.Bad {
			return nil // a stale marker is not a new value
		}
		return a.update(s.TS, false)
	}
	if s.Quality == uns.Bad || (a.Def.GoodOnly && s.Quality == uns.Uncertain) {
		a.Rate.Break()
		return nil
	}
	if s.Value.Kind == uns.KindString {
		a.Text, a.HasValue = s.Value.S, true
	} else if f, ok := s.Value.AsFloat(); ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
		a.Value, a.Text, a.HasValue = f, "", true
	} else {
		return nil
	}
	if a.Def.Kind == KindRate {
		r, ok := a.Rate.Add(s.TS, a.Value)
		if !ok {
			return a.update(s.TS, a.Cond)
		}
		if a.Cond {
			return a.update(s.TS, math.Abs(r) > a.Def.Limit-a.Def.Deadband)
		}
		return a.update(s.TS, math.Abs(r) > a.Def.Limit)
	}
	return a.update(s.TS, a.condition())
}

// update records the condition at ts and applies the delays.
func (a *Alarm) update(ts time.Time, cond bool) []Transition {
	if cond != a.Cond {
		a.Cond, a.CondSince = cond, ts
	}
	return a.Tick(ts)
}

// Tick moves the alarm to time now: a condition that has held for its
// delay raises or clears the alarm, stamped when the delay ended; a stale
// alarm raises when its tag has been silent for After; shelving expires.
func (a *Alarm) Tick(now time.Time) []Transition {
	var out []Transition
	if !a.ShelvedUntil.IsZero() && !now.Before(a.ShelvedUntil) {
		at := a.ShelvedUntil
		a.ShelvedUntil = time.Time{}
		out = append(out, a.transition(at, EventUnshelve))
	}
	if a.Def.Kind == KindStale && !a.LastTS.IsZero() {
		if silent := a.LastTS.Add(a.Def.After); !now.Before(silent) && !a.Cond {
			a.Cond, a.CondSince = true, silent
		}
	}
	if a.Cond && !a.Active && !a.CondSince.IsZero() && !a.Suppressed {
		if at := a.CondSince.Add(a.Def.OnDelay); !now.Before(at) {
			a.Active, a.Acked, a.Since = true, false, at
			out = append(out, a.transition(at, EventRaise))
		}
	}
	if !a.Cond && a.Active {
		if at := a.CondSince.Add(a.Def.OffDelay); !now.Before(at) {
			a.Active, a.Since = false, at
			out = append(out, a.transition(at, EventClear))
		}
	}
	return out
}

// ObserveSuppression feeds a sample of the tag of Def.SuppressWhen. A bad
// sample, or one older than the last, changes nothing. Suppression clears
// an active alarm; when it ends, a condition that still holds counts from
// then (its on delay too).
func (a *Alarm) ObserveSuppression(s uns.Sample) []Transition {
	sup, ok := a.suppresses(s)
	if !ok || s.TS.Before(a.SuppressTS) {
		return nil
	}
	a.SuppressTS = s.TS
	return a.suppress(s.TS, sup)
}

// suppress begins (sup) or ends suppression at ts.
func (a *Alarm) suppress(ts time.Time, sup bool) []Transition {
	if sup == a.Suppressed {
		return nil
	}
	a.Suppressed = sup
	var out []Transition
	if sup {
		if a.Active {
			a.Active, a.Since = false, ts
			out = append(out, a.transition(ts, EventClear))
		}
		return append(out, a.transition(ts, EventSuppress))
	}
	out = append(out, a.transition(ts, EventUnsuppress))
	if a.Cond {
		a.CondSince = ts
	}
	return append(out, a.Tick(ts)...)
}

// suppresses reports whether a sample of the tag of Def.SuppressWhen is
// the state that suppresses the alarm; ok is false for a sample that
// tells nothing (bad, or not a value).
func (a *Alarm) suppresses(s uns.Sample) (sup, ok bool) {
	sw := a.Def.SuppressWhen
	if sw == nil || sw.Tag == "" || s.Quality == uns.Bad {
		return false, false
	}
	if s.Value.Kind == uns.KindString {
		return stateMatches(sw.State, 0, s.Value.S), true
	}
	f, ok := s.Value.AsFloat()
	if !ok {
		return false, false
	}
	return stateMatches(sw.State, f, ""), true
}

// ValidateAlarms checks the alarms of one device together: an alarm that
// suppresses another is one of the device's, and is not suppressed by an
// alarm itself (one level: a trip and its consequences).
func ValidateAlarms(at string, defs []AlarmDef) error {
	var errs []error
	byName := map[string]*AlarmDef{}
	for i := range defs {
		if !defs[i].Disabled {
			byName[defs[i].Name] = &defs[i]
		}
	}
	for _, d := range defs {
		sw := d.SuppressWhen
		if d.Disabled || sw == nil || sw.Alarm == "" || sw.Alarm == d.Name {
			continue
		}
		switch l, ok := byName[sw.Alarm]; {
		case !ok:
			errs = append(errs, fmt.Errorf("%s alarm %s suppress_when alarm %q: no such alarm of the device", at, d.Name, sw.Alarm))
		case l.SuppressWhen != nil && l.SuppressWhen.Alarm != "":
			errs = append(errs, fmt.Errorf("%s alarm %s suppress_when alarm %q: that alarm is itself suppressed by an alarm; one level only", at, d.Name, sw.Alarm))
		}
	}
	return errors.Join(errs...)
}

// Ack acknowledges the alarm; an alarm that needs no acknowledgement
// returns an error.
func (a *Alarm) Ack(now time.Time, user, comment string) (Transition, error) {
	if a.Acked {
		return Transition{}, fmt.Errorf("alarm %s is %s: nothing to acknowledge", a.Path, a.State())
	}
	a.Acked, a.Since = true, now
	tr := a.transition(now, EventAck)
	tr.User, tr.Comment = user, comment
	return tr, nil
}

// Shelve hides the alarm until until; Shelve with a time not after now
// unshelves it.
func (a *Alarm) Shelve(now, until time.Time, user, comment string) Transition {
	event := EventShelve
	if !until.After(now) {
		event, until = EventUnshelve, time.Time{}
	}
	a.ShelvedUntil = until
	tr := a.transition(now, event)
	tr.User, tr.Comment = user, comment
	return tr
}

// Annunciated reports whether the alarm wants an operator at now: in a
// state other than normal, not shelved and not suppressed.
func (a *Alarm) Annunciated(now time.Time) bool {
	return a.State() != StateNormal && !a.Shelved(now) && !a.Suppressed
}
