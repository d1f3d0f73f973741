package historian

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// yearMany is the minute rollups of many tags over a span, written
// minute by minute and tag by tag, as the writer's flushes of the minute
// sums write them: the rows a long chart of one of them reads.
type yearMany struct {
	h       *Historian
	path    string
	tags    int
	minutes int
	t0      time.Time
	hours   bool // the hour rollups are built
}

const yearMinutes = 365 * 24 * 60

func newYearMany(tb testing.TB, dir string, tags, minutes int) *yearMany {
	ctx := context.Background()
	f := &yearMany{path: filepath.Join(dir, "yearmany.duckdb"), tags: tags, minutes: minutes, t0: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	var err error
	if f.h, err = Open(ctx, Options{Path: f.path}); err != nil {
		tb.Fatal(err)
	}
	all := make([]uns.Tag, tags)
	for i := range all {
		all[i] = uns.Tag{Path: yearManyPath(i), DataType: uns.TypeFloat64}
	}
	if err := f.h.UpsertTags(ctx, all); err != nil {
		tb.Fatal(err)
	}
	// Written in SQL, not through the writer: this is the reading side;
	// a day at a time, as the flushes add to the table over the year.
	const day = 24 * 60
	for d := 0; d*day < minutes; d++ {
		n := min(day, minutes-d*day)
		from := f.t0.Add(time.Duration(d*day) * time.Minute)
		_, err := f.h.db.ExecContext(ctx, `INSERT INTO rollup_1m
SELECT (i % ?) + (SELECT min(id) FROM tags), ?::TIMESTAMPTZ + to_minutes(i // ?), 60, 60 * 1100.0, 1000 + (hash(i) % 50), 1150 + (hash(i) % 50),
	?::TIMESTAMPTZ + to_minutes(i // ?) + INTERVAL 7 SECOND, ?::TIMESTAMPTZ + to_minutes(i // ?) + INTERVAL 41 SECOND
FROM range(?) t(i)`, tags, from, tags, from, tags, from, tags, tags*n)
		// What a bulk insert changes in the table's key index stays in
		// memory until a checkpoint; the historian's inserts are small.
		if err == nil && d%4 == 3 {
			_, err = f.h.db.ExecContext(ctx, `CHECKPOINT`)
		}
		if err != nil {
			tb.Fatalf("day %d: %v", d, err)
		}
	}
	return f
}

// buildHours builds the hour rollups as the maintenance of a running
// cloud does: an hour at a time, as each ends.
func (f *yearMany) buildHours(tb testing.TB) {
	for hr := 1; hr <= f.minutes/60; hr++ {
		if n, err := f.h.BuildHours(context.Background(), f.t0.Add(time.Duration(hr)*time.Hour+hourAfter)); err != nil || n != 1 {
			tb.Fatalf("hour %d: built %d, %v", hr, n, err)
		}
	}
	f.hours = true
}

// chart is a 1,000-point chart of the whole span of the middle tag.
func (f *yearMany) chart(tb testing.TB) []Point {
	pts, err := f.h.Downsample(context.Background(), yearManyPath(f.tags/2), f.t0, f.t0.Add(time.Duration(f.minutes)*time.Minute), 1000)
	if err != nil || len(pts) < 900 {
		tb.Fatalf("%d points, %v", len(pts), err)
	}
	return pts
}

// reopen opens the historian anew: DuckDB's buffers are empty.
func (f *yearMany) reopen(tb testing.TB) {
	if err := f.h.Close(); err != nil {
		tb.Fatal(err)
	}
	var err error
	if f.h, err = Open(context.Background(), Options{Path: f.path}); err != nil {
		tb.Fatal(err)
	}
}

func yearManyPath(i int) uns.Path {
	return uns.Path(fmt.Sprintf("limeworks/yearmany/area/line/m%02d/t%03d", i/100, i%100))
}

// yearManyBench is the benchmark's year of 100 tags (CALX_BENCH_YEAR_TAGS
// to change), made once.
var yearManyBench struct {
	once sync.Once
	f    *yearMany
}

// BenchmarkTrendYearOfMany: a 1,000-point chart of one tag over a year,
// among many tags: from the minute rollups alone (as before the hour
// rollups, the baseline), then from the hour rollups, warm (read before)
// and cold (the historian opened anew before each read: DuckDB's buffers
// are empty, the operating system's file cache is as it is).
func BenchmarkTrendYearOfMany(b *testing.B) {
	yearManyBench.once.Do(func() {
		tags, minutes := 100, yearMinutes
		if testing.Short() { // a smoke check of the steps (make test)
			tags, minutes = 3, 45*24*60
		}
		if s := os.Getenv("CALX_BENCH_YEAR_TAGS"); s != "" {
			var err error
			if tags, err = strconv.Atoi(s); err != nil {
				b.Fatal(err)
			}
		}
		dir, err := os.MkdirTemp("", "calx-bench-yearmany-")
		if err != nil {
			b.Fatal(err)
		}
		began := time.Now()
		yearManyBench.f = newYearMany(b, dir, tags, minutes)
		b.Logf("%d days of minute rollups of %d tags (%d rows) written in %s", minutes/(24*60), tags, tags*minutes, time.Since(began).Round(time.Second))
	})
	f := yearManyBench.f
	if f == nil {
		b.Fatal("no fixture")
	}
	b.Run(fmt.Sprintf("tags=%d/minutes", f.tags), func(b *testing.B) {
		if f.hours {
			b.Skip("the hour rollups are built already: run with -count 1")
		}
		for b.Loop() {
			f.chart(b)
		}
	})
	if !f.hours {
		began := time.Now()
		f.buildHours(b)
		b.Logf("the hour rollups built an hour at a time in %s", time.Since(began).Round(time.Second))
	}
	b.Run(fmt.Sprintf("tags=%d/hours-warm", f.tags), func(b *testing.B) {
		for b.Loop() {
			f.chart(b)
		}
	})
	b.Run(fmt.Sprintf("tags=%d/hours-cold", f.tags), func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			f.reopen(b)
			b.StartTimer()
			f.chart(b)
		}
	})
}

// TestTrendYearOfManySmoke runs the benchmark's steps on 3 tags over 45
// days (no timing asserted; two-hour chart buckets, so the hours answer):
// the chart from the hours, warm and cold, has the extremes of the chart
// from the minutes.
func TestTrendYearOfManySmoke(t *testing.T) {
	f := newYearMany(t, t.TempDir(), 3, 45*24*60)
	t.Cleanup(func() { f.h.Close() })
	want := chartExtremes(t, f.chart(t))
	f.buildHours(t)
	if got := chartExtremes(t, f.chart(t)); got != want {
		t.Fatalf("from the hours: %+v, from the minutes %+v", got, want)
	}
	f.reopen(t)
	if got := chartExtremes(t, f.chart(t)); got != want {
		t.Fatalf("cold: %+v, from the minutes %+v", got, want)
	}
}
