// Package transform holds the cloud's transforms of the namespace as pure,
// deterministic state machines: functions of time for calculated tags
// (integral, rate of change, rolling windows, unit conversion), production
// cycles with aggregates, and ISA-18.2 alarms. They are fed samples in time
// order and say what follows; the cloud feeds them from the UNS stream,
// stores what they say, and saves their state so that a restart resumes
// where it stopped.
package transform

import (
	"math"
	"time"
)

// Integral is the integral over time of a value sampled at irregular
// instants, by the trapezoid rule, in value x seconds. A gap (Break) is not
// integrated: the segment from a bad or missing value to the next good one
// counts nothing.
type Integral struct {
	Sum    float64   `json:"sum"`     // value x seconds
	Last   float64   `json:"last"`    // the previous sample
	LastTS time.Time `json:"last_ts"` // its time; zero before the first
	Open   bool      `json:"open"`    // Last is good and continues until the next sample
}

// Add integrates up to the sample (ts, v). A sample older than the previous
// one changes nothing and returns false.
func (i *Integral) Add(ts time.Time, v float64) bool {
	if !i.LastTS.IsZero() && ts.Before(i.LastTS) {
		return false
	}
	if i.Open {
		i.Sum += (i.Last + v) / 2 * ts.Sub(i.LastTS).Seconds()
	}
	i.Last, i.LastTS, i.Open = v, ts, true
	return true
}

// Break marks a gap from ts: nothing is integrated until the next Add.
func (i *Integral) Break(ts time.Time) {
	if !i.LastTS.IsZero() && ts.Before(i.LastTS) {
		return
	}
	if i.Open {
		i.Sum += i.Last * ts.Sub(i.LastTS).Seconds() // held up to the gap
	}
	i.LastTS, i.Open = ts, false
}

// HoldTo integrates the last value held up to ts without a new sample, for
// a total that must close at ts (the end of a cycle).
func (i *Integral) HoldTo(ts time.Time) {
	if i.Open && ts.After(i.LastTS) {
		i.Sum += i.Last * ts.Sub(i.LastTS).Seconds()
		i.LastTS = ts
	}
}

// Rate is the rate of change per second between a sample and the one
// before it, or, with a window, between a sample and the value held at the
// start of the window (the window's first sample when it starts later).
type Rate struct {
	Window  time.Duration `json:"window"`
	Samples []TSValue     `json:"samples"` // oldest first; the first is held at the window's start
}

// TSValue is a value at a time.
type TSValue struct {
	TS time.Time `json:"ts"`
	V  float64   `json:"v"`
}

// Add records (ts, v) and returns the rate at ts; ok is false when there is
// no earlier sample to compare with, or the sample is older than the last.
func (r *Rate) Add(ts time.Time, v float64) (rate float64, ok bool) {
	n := len(r.Samples)
	if n > 0 && ts.Before(r.Samples[n-1].TS) {
		return 0, false
	}
	if n > 0 && ts.Equal(r.Samples[n-1].TS) {
		r.Samples[n-1].V = v
	} else {
		r.Samples = append(r.Samples, TSValue{ts, v})
	}
	if r.Window <= 0 {
		if len(r.Samples) > 2 {
			r.Samples = append(r.Samples[:0], r.Samples[len(r.Samples)-2:]...)
		}
	} else {
		start := ts.Add(-r.Window)
		drop := 0
		for drop+1 < len(r.Samples) && !r.Samples[drop+1].TS.After(start) {
			drop++
		}
		r.Samples = append(r.Samples[:0], r.Samples[drop:]...)
	}
	if len(r.Samples) < 2 {
		return 0, false
	}
	first := r.Samples[0]
	dt := ts.Sub(first.TS).Seconds()
	if r.Window > 0 {
		if start := ts.Add(-r.Window); start.After(first.TS) {
			dt = r.Window.Seconds() // the first value held at the start
		}
	}
	if dt <= 0 {
		return 0, false
	}
	return (v - first.V) / dt, true
}

// Break forgets the samples: the next rate compares with nothing older.
func (r *Rate) Break() { r.Samples = r.Samples[:0] }

// windowBuckets is how finely a rolling window keeps its past: its
// average, lowest and highest value are exact to a 600th of the window.
const windowBuckets = 600

// ringSize holds a window's buckets: the one it starts in, part of which
// is in the window, and the one it ends in.
const ringSize = windowBuckets + 2

// Window is a rolling window over the last Span of a value sampled at
// irregular instants, held from one sample to the next (step): its
// time-weighted average, lowest and highest value. It keeps windowBuckets
// buckets, not the samples, so that a day at 1 Hz costs as little as an
// hour; the oldest bucket counts in proportion to the part of it still in
// the window.
type Window struct {
	Span    time.Duration `json:"span"`
	Buckets []bucket      `json:"buckets"` // ring, by bucket number mod ringSize
	Last    float64       `json:"last"`
	LastTS  time.Time     `json:"last_ts"`
	Open    bool          `json:"open"` // Last holds until the next sample
}

type bucket struct {
	N    int64   `json:"n"`    // bucket number: start = N * width since the Unix epoch
	Area float64 `json:"area"` // value x seconds
	Secs float64 `json:"secs"` // seconds with a value
	Min  float64 `json:"min"`  // of the values in the bucket, when Has
	Max  float64 `json:"max"`
	Has  bool    `json:"has"`
}

func (b *bucket) see(v float64) {
	if !b.Has {
		b.Min, b.Max, b.Has = v, v, true
		return
	}
	b.Min, b.Max = math.Min(b.Min, v), math.Max(b.Max, v)
}

func (w *Window) width() time.Duration {
	return max(w.Span/windowBuckets, time.Millisecond)
}

// bucketOf returns the bucket holding instant ts, made empty if it held an
// older one.
func (w *Window) bucketOf(ts time.Time) *bucket {
	if w.Buckets == nil {
		w.Buckets = make([]bucket, ringSize)
		for i := range w.Buckets {
			w.Buckets[i].N = math.MinInt64
		}
	}
	n := floorDiv(ts.UnixNano(), int64(w.width()))
	b := &w.Buckets[int(((n%ringSize)+ringSize)%ringSize)]
	if b.N != n {
		*b = bucket{N: n}
	}
	return b
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// hold spreads the held value over [from, to) across the buckets.
func (w *Window) hold(from, to time.Time, v float64) {
	width := w.width()
	if to.Sub(from) > w.Span+width { // older than the window: only its tail matters
		from = to.Add(-w.Span - width)
	}
	for from.Before(to) {
		b := w.bucketOf(from)
		end := time.Unix(0, (b.N+1)*int64(width))
		if end.After(to) {
			end = to
		}
		s := end.Sub(from).Seconds()
		b.Area += v * s
		b.Secs += s
		b.see(v)
		from = end
	}
}

// Add records (ts, v); a sample older than the last returns false.
func (w *Window) Add(ts time.Time, v float64) bool {
	if !w.LastTS.IsZero() && ts.Before(w.LastTS) {
		return false
	}
	if w.Open {
		w.hold(w.LastTS, ts, w.Last)
	}
	w.bucketOf(ts).see(v)
	w.Last, w.LastTS, w.Open = v, ts, true
	return true
}

// Break ends the held value at ts: no value until the next Add.
func (w *Window) Break(ts time.Time) {
	if !w.LastTS.IsZero() && ts.Before(w.LastTS) {
		return
	}
	if w.Open {
		w.hold(w.LastTS, ts, w.Last)
	}
	w.LastTS, w.Open = ts, false
}

// At returns the average, lowest and highest value over (at - Span, at],
// the last value held up to at; ok is false when the window holds no value.
func (w *Window) At(at time.Time) (avg, lo, hi float64, ok bool) {
	avg, lo, hi, _, ok = w.Covered(at)
	return
}

// Covered is At with the share of the window that has a value (0 to 1).
func (w *Window) Covered(at time.Time) (avg, lo, hi, coverage float64, ok bool) {
	if w.Buckets == nil {
		return 0, 0, 0, 0, false
	}
	width := int64(w.width())
	start := at.Add(-w.Span)
	first := floorDiv(start.UnixNano(), width)
	last := floorDiv(at.UnixNano(), width)
	var area, secs float64
	lo, hi = math.Inf(1), math.Inf(-1)
	for i := range w.Buckets {
		b := &w.Buckets[i]
		if b.N < first || b.N > last {
			continue
		}
		frac := 1.0
		if b.N == first { // partly before the window
			bs := time.Unix(0, b.N*width)
			frac = 1 - float64(start.Sub(bs))/float64(width)
		}
		area += b.Area * frac
		secs += b.Secs * frac
		if b.Has {
			lo, hi = math.Min(lo, b.Min), math.Max(hi, b.Max)
		}
	}
	if w.Open && at.After(w.LastTS) { // the held value, up to at
		from := w.LastTS
		if from.Before(start) {
			from = start
		}
		s := at.Sub(from).Seconds()
		area += w.Last * s
		secs += s
		lo, hi = math.Min(lo, w.Last), math.Max(hi, w.Last)
	}
	if lo > hi {
		return 0, 0, 0, 0, false
	}
	coverage = min(1, secs/w.Span.Seconds())
	if secs <= 0 { // one instant: its value
		return w.Last, lo, hi, coverage, w.Open
	}
	return area / secs, lo, hi, coverage, true
}
