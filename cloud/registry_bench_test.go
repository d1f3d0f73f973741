package cloud

import (
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// BenchmarkLatest10k: the current values of 10,000 tags, listed and
// encoded as JSON, as GET /api/v1/latest answers them.
func BenchmarkLatest10k(b *testing.B) {
	r := NewRegistry()
	now := time.Now()
	var samples []uns.Sample
	for i := range 10000 {
		p := uns.Path(fmt.Sprintf("limeworks/site%d/area/line%d/m%d/tag%d", i%10, i%7, i%100, i))
		r.Define(uns.Tag{Path: p, DataType: uns.TypeFloat64, Unit: "°C"})
		samples = append(samples, uns.Sample{Path: p, TS: now, Value: uns.Float(float64(i))})
	}
	r.Update(samples)
	enc := json.NewEncoder(io.Discard)
	for b.Loop() {
		tags := r.List("")
		if len(tags) != 10000 {
			b.Fatal(len(tags))
		}
		if err := enc.Encode(tags); err != nil {
			b.Fatal(err)
		}
	}
}
