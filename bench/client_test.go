package bench

import (
	"math"
	"testing"
)

func TestHistogramQuantiles(t *testing.T) {
	// 100 observations: 50 up to 10 ms, 40 in (10, 20], 10 in (20, 40].
	old := histogram{bounds: []float64{0.01, 0.02, 0.04}, counts: []uint64{5, 5, 5}, total: 5}
	h := histogram{bounds: []float64{0.01, 0.02, 0.04}, counts: []uint64{55, 95, 105}, total: 105}.since(old)
	if h.total != 100 {
		t.Fatalf("total %d", h.total)
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 0.01}, {0.25, 0.005}, {0.7, 0.015}, {0.99, 0.038}} {
		if got := h.quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%.2f = %v, want %v", c.q, got, c.want)
		}
	}
	if got := h.maxBound(); got != 0.04 {
		t.Errorf("max bound %v", got)
	}
	// Observations above the last bucket.
	over := histogram{bounds: []float64{0.01}, counts: []uint64{1}, total: 2}
	if !math.IsInf(over.maxBound(), 1) {
		t.Errorf("max bound with overflow: %v", over.maxBound())
	}
	if !math.IsNaN(histogram{}.quantile(0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
}
