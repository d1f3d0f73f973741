package uns

import (
	"math"
	"time"
)

// Deadband is the report-by-exception rule of one tag: a new sample is
// reported when it differs enough from the last reported one, when the
// quality changes, or when the heartbeat is due; never more often than
// MinInterval.
type Deadband struct {
	Abs         float64       // absolute change that counts, in engineering units
	Percent     float64       // change that counts, in percent of Span
	Span        float64       // engineering span (high - low) for Percent
	MinInterval time.Duration // no two reports closer than this (0: no limit)
	Heartbeat   time.Duration // report unchanged values at least this often (0: never)
}

// Filter applies a Deadband to a stream of samples of one tag.
// The zero value reports every change.
type Filter struct {
	Deadband
	last    Sample
	hasLast bool
}

// Pass reports whether s should be sent, and remembers it if so.
func (f *Filter) Pass(s Sample) bool {
	if !f.hasLast {
		f.accept(s)
		return true
	}
	since := s.TS.Sub(f.last.TS)
	if s.Quality != f.last.Quality {
		f.accept(s)
		return true
	}
	if f.MinInterval > 0 && since < f.MinInterval {
		return false
	}
	if f.Heartbeat > 0 && since >= f.Heartbeat {
		f.accept(s)
		return true
	}
	if f.changed(s.Value) {
		f.accept(s)
		return true
	}
	return false
}

func (f *Filter) accept(s Sample) { f.last, f.hasLast = s, true }

func (f *Filter) changed(v Value) bool {
	old := f.last.Value
	a, okA := old.AsFloat()
	b, okB := v.AsFloat()
	if !okA || !okB || old.Kind != v.Kind || v.Kind == KindBool {
		return !old.Equal(v)
	}
	if math.IsNaN(a) != math.IsNaN(b) {
		return true
	}
	d := math.Abs(b - a)
	band := f.Abs
	if p := f.Percent * f.Span / 100; p > band {
		band = p
	}
	if band <= 0 {
		return d != 0
	}
	return d >= band
}
