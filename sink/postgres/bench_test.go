package postgres

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/internal/pgtest"
	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/uns"
)

// BenchmarkSinkWrite writes batches of 10,000 values, one a second of each
// of 1,000 tags arriving interleaved in time, into PostgreSQL through the
// sink, and in turn the same batches into Calx's DuckDB historian, so that
// both rates come from the same run: values/s (the sink) beside
// duckdb_values/s.
func BenchmarkSinkWrite(b *testing.B) {
	benchSink(b, 1000, 10_000)
}

// TestSinkWriteSmoke runs the benchmark's steps once, small: both ends
// take every batch.
func TestSinkWriteSmoke(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchSink(b, 100, 1000) })
	if res.N == 0 || res.Extra["values/s"] <= 0 || res.Extra["duckdb_values/s"] <= 0 {
		t.Fatalf("sink write: %v %v", res, res.Extra)
	}
}

func benchSink(b *testing.B, tags, batchSize int) {
	ctx := context.Background()
	pg := pgtest.Start(b)
	s, err := Open(Options{URL: pg.URL()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	h, err := historian.Open(ctx, historian.Options{Path: filepath.Join(b.TempDir(), "bench.duckdb")})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	paths := make([]uns.Path, tags)
	born := make([]uns.Tag, tags)
	for i := range paths {
		paths[i] = uns.Path(fmt.Sprintf("limeworks/bench/area/line/m%03d/tag%03d", i/1000, i%1000))
		born[i] = uns.Tag{Path: paths[i], DataType: uns.TypeFloat64}
	}
	if err := h.UpsertTags(ctx, born); err != nil {
		b.Fatal(err)
	}
	batch := make([]uns.Sample, 0, batchSize)
	t0 := time.Now().Add(-24 * time.Hour).Truncate(time.Second)
	next := 0
	var inSink, inDuck time.Duration
	for b.Loop() {
		batch = batch[:0]
		for range batchSize {
			ts := t0.Add(time.Duration(next/tags) * time.Second)
			batch = append(batch, uns.Sample{Path: paths[next%tags], TS: ts, Value: uns.Float(float64(next % 977)), Quality: uns.Good})
			next++
		}
		began := time.Now()
		if err := s.WriteBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		inSink += time.Since(began)
		began = time.Now()
		if err := h.WriteBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		inDuck += time.Since(began)
	}
	values := float64(b.N * batchSize)
	b.ReportMetric(values/inSink.Seconds(), "values/s")
	b.ReportMetric(values/inDuck.Seconds(), "duckdb_values/s")
	b.ReportMetric(0, "ns/op")
}
