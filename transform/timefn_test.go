package transform

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 5, 4, 8, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestIntegralOnIrregularSamples(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples [][2]float64 // seconds, value; NaN value: a break
		want    float64      // value x seconds
	}{
		{"constant", [][2]float64{{0, 100}, {7, 100}, {8.5, 100}, {3600, 100}}, 360000},
		// A ramp is integrated exactly by trapezoids, however irregular.
		{"ramp", [][2]float64{{0, 0}, {1, 1}, {1.5, 1.5}, {40, 40}, {41.25, 41.25}, {100, 100}}, 5000},
		{"one sample", [][2]float64{{5, 42}}, 0},
		// 0-10 s at 10, a gap 10-20 s (nothing), 20-30 s at 5.
		{"gap", [][2]float64{{0, 10}, {10, 10}, {10, math.NaN()}, {20, 5}, {30, 5}}, 150},
		// An older sample changes nothing.
		{"late", [][2]float64{{0, 1}, {10, 1}, {5, 1000}, {20, 1}}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in Integral
			for _, s := range tc.samples {
				if math.IsNaN(s[1]) {
					in.Break(at(s[0]))
				} else {
					in.Add(at(s[0]), s[1])
				}
			}
			if !near(in.Sum, tc.want, 1e-9) {
				t.Fatalf("sum = %v, want %v", in.Sum, tc.want)
			}
		})
	}
}

func TestRate(t *testing.T) {
	var r Rate
	if _, ok := r.Add(at(0), 10); ok {
		t.Fatal("a rate from one sample")
	}
	if v, ok := r.Add(at(2), 14); !ok || v != 2 {
		t.Fatalf("rate = %v %v, want 2", v, ok)
	}
	if v, ok := r.Add(at(2.5), 13); !ok || v != -2 {
		t.Fatalf("rate = %v %v, want -2", v, ok)
	}
	// Over a window of 10 s: from the value held at the window's start.
	w := Rate{Window: 10 * time.Second}
	w.Add(at(0), 0)
	w.Add(at(3), 30)
	if v, _ := w.Add(at(9), 60); v != 60.0/9 {
		t.Fatalf("rate over the first 9 s = %v", v)
	}
	// At 15 s the window starts at 5 s, where 30 (from 3 s) was held.
	if v, _ := w.Add(at(15), 80); v != (80.0-30)/10 {
		t.Fatalf("rate over the window = %v, want 5", v)
	}
}

// brute is the time-weighted average, min and max of a step function over
// (from, to].
func brute(samples [][2]float64, from, to float64) (avg, lo, hi float64) {
	var area, secs float64
	lo, hi = math.Inf(1), math.Inf(-1)
	for i, s := range samples {
		end := to
		if i+1 < len(samples) {
			end = math.Min(samples[i+1][0], to)
		}
		start := math.Max(s[0], from)
		if end <= start && !(s[0] >= from && s[0] <= to) {
			continue
		}
		if end > start {
			area += s[1] * (end - start)
			secs += end - start
		}
		lo, hi = math.Min(lo, s[1]), math.Max(hi, s[1])
	}
	return area / secs, lo, hi
}

func TestWindowOnIrregularSamples(t *testing.T) {
	// A minute's window, at a 10th of a second's resolution; samples at
	// irregular instants on that grid.
	w := Window{Span: time.Minute}
	var samples [][2]float64
	ts := 0.0
	for i := range 400 {
		v := 50 + 40*math.Sin(float64(i)/17) + float64(i%7)
		samples = append(samples, [2]float64{ts, v})
		if !w.Add(at(ts), v) {
			t.Fatalf("sample %d refused", i)
		}
		if ts >= 60 && i%23 == 0 {
			avg, lo, hi, ok := w.At(at(ts))
			wavg, wlo, whi := brute(samples, ts-60, ts)
			if !ok || !near(avg, wavg, 1e-7) || hi != whi {
				t.Fatalf("at %.1f s: avg %v lo %v hi %v, want %v %v %v", ts, avg, lo, hi, wavg, wlo, whi)
			}
			// The lowest may include the value held into the window from
			// the bucket it started in.
			if lo > wlo {
				t.Fatalf("at %.1f s: lo %v above %v", ts, lo, wlo)
			}
		}
		ts += []float64{0.3, 0.1, 1.7, 0.2, 0.9}[i%5]
	}
	// The held value fills the window up to any instant asked.
	avg, lo, hi, ok := w.At(at(ts + 120))
	last := samples[len(samples)-1][1]
	if !ok || avg != last || lo != last || hi != last {
		t.Fatalf("long after: %v %v %v %v, want %v", avg, lo, hi, ok, last)
	}
	// A break ends the value: a window with nothing in it has no value.
	w.Break(at(ts + 120))
	if _, _, _, ok := w.At(at(ts + 300)); ok {
		t.Fatal("a value in a window after a break")
	}
	// A day at 1 Hz keeps 600 buckets, not 86,400 samples.
	d := Window{Span: 24 * time.Hour}
	for i := range 2 * 86400 {
		d.Add(at(float64(i)), float64(i%3600))
	}
	if len(d.Buckets) != ringSize {
		t.Fatalf("%d buckets", len(d.Buckets))
	}
	if avg, _, hi, _ := d.At(at(2*86400 - 1)); !near(avg, 1799.5, 3) || hi != 3599 {
		t.Fatalf("a day's average %v (want about 1799.5), max %v", avg, hi)
	}
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		v        float64
		from, to string
		want     float64
	}{
		{100, "degC", "degF", 212},
		{-40, "°F", "°C", -40},
		{0, "degC", "K", 273.15},
		{1, "kWh", "MJ", 3.6},
		{1, "bar", "kPa", 100},
		{745.69987158227022, "W", "hp", 1},
		{2.5, "t/h", "kg/s", 2500.0 / 3600},
		{1, "MW", "kW", 1000},
		{1, "mw", "kW", 1000}, // the only unit of that name in any case
	} {
		got, err := Convert(tc.v, tc.from, tc.to)
		if err != nil || !near(got, tc.want, 1e-9) {
			t.Errorf("%v %s in %s = %v, %v; want %v", tc.v, tc.from, tc.to, got, err, tc.want)
		}
	}
	if _, err := Convert(1, "kW", "bar"); err == nil {
		t.Error("kW converted to bar")
	}
	if _, err := Convert(1, "furlong", "m"); err == nil {
		t.Error("an unknown unit converted")
	}
}
