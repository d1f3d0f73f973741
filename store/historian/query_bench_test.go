package historian

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/uns"
)

// yearFixture is one tag with a value every second for a year (31.5 M
// points), made once for the benchmarks that read it.
var yearFixture struct {
	once sync.Once
	dir  string
	h    *Historian
	p    uns.Path
	t0   time.Time
	err  error
}

// yearSeconds is the fixture's length: a year, or three days with -short
// (a smoke check of the steps in make test).
var yearSeconds = 365 * 24 * 3600

// dayOfYear is the start of the day the day benchmarks read.
func dayOfYear(t0 time.Time) time.Time {
	return t0.Add(min(200*24*time.Hour, time.Duration(yearSeconds-24*3600)*time.Second))
}

func yearOfSeconds(b *testing.B) (*Historian, uns.Path, time.Time) {
	f := &yearFixture
	f.once.Do(func() {
		if testing.Short() {
			yearSeconds = 3 * 24 * 3600
		}
		dir, err := os.MkdirTemp("", "calx-bench-")
		if err != nil {
			f.err = err
			return
		}
		f.dir = dir
		ctx := context.Background()
		f.h, f.err = Open(ctx, Options{Path: filepath.Join(dir, "year.duckdb")})
		if f.err != nil {
			return
		}
		f.p, f.t0 = "limeworks/bench/kilns/line1/kiln1/burning_zone_temp", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		if f.err = f.h.UpsertTags(ctx, []uns.Tag{{Path: f.p, DataType: uns.TypeFloat64}}); f.err != nil {
			return
		}
		id, _ := f.h.id(f.p)
		// Written in SQL, not through the appender: this is the reading side.
		_, f.err = f.h.db.ExecContext(ctx, `INSERT INTO points
SELECT ?, ?::TIMESTAMPTZ + to_seconds(i), 1100 + 50 * sin(i / 3600.0) + (hash(i) % 100) / 100.0, NULL, NULL, 0
FROM range(?) t(i)`, id, f.t0, yearSeconds)
		if f.err != nil {
			return
		}
		if _, f.err = f.h.db.ExecContext(ctx, `INSERT INTO rollup_dirty SELECT DISTINCT tag_id, time_bucket(INTERVAL 1 MINUTE, ts) FROM points`); f.err != nil {
			return
		}
		if _, f.err = f.h.RollupClosed(ctx, time.Now(), rollupGrace, rollupChunk); f.err != nil { // in pieces, as the maintenance does
			return
		}
		_, f.err = f.h.BuildHours(ctx, f.t0.Add(time.Duration(yearSeconds)*time.Second+time.Hour))
	})
	if f.err != nil {
		b.Fatal(f.err)
	}
	return f.h, f.p, f.t0
}

// BenchmarkTrendYear: a 1,000-point chart of one tag over a year at 1 Hz,
// from the minute rollups alone (how it was read before the hour rollups:
// the baseline) and from the hour rollups.
func BenchmarkTrendYear(b *testing.B) {
	h, p, t0 := yearOfSeconds(b)
	ctx := context.Background()
	trend := func(b *testing.B) {
		for b.Loop() {
			pts, err := h.Downsample(ctx, p, t0, t0.Add(time.Duration(yearSeconds)*time.Second), 1000)
			if err != nil || len(pts) < 900 {
				b.Fatalf("%d points, %v", len(pts), err)
			}
		}
	}
	built := h.hoursBuilt.Load()
	b.Run("minutes", func(b *testing.B) {
		h.hoursBuilt.Store(0) // no hour is built: the chart reads the minutes
		defer h.hoursBuilt.Store(built)
		trend(b)
	})
	b.Run("hours", trend)
}

// BenchmarkRawDay: one day of one tag at 1 Hz, every point, through
// History; the baseline in the same run reads the same rows with the same
// SQL through database/sql's Scan.
func BenchmarkRawDay(b *testing.B) {
	h, p, t0 := yearOfSeconds(b)
	ctx := context.Background()
	from := dayOfYear(t0)
	to := from.Add(24*time.Hour - time.Second)
	b.Run("historian", func(b *testing.B) {
		for b.Loop() {
			pts, err := h.History(ctx, p, from, to, 0)
			if err != nil || len(pts) != 86400 {
				b.Fatalf("%d points, %v", len(pts), err)
			}
		}
	})
	id, _ := h.id(p)
	b.Run("database-sql-scan", func(b *testing.B) {
		for b.Loop() {
			rows, err := h.db.QueryContext(ctx, `SELECT ts, value, value_int, value_str, quality FROM points
WHERE tag_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts`, id, from, to)
			if err != nil {
				b.Fatal(err)
			}
			var pts []Point
			for rows.Next() {
				var pt Point
				var f sql.NullFloat64
				var i sql.NullInt64
				var s sql.NullString
				var q uint8
				if err := rows.Scan(&pt.TS, &f, &i, &s, &q); err != nil {
					b.Fatal(err)
				}
				pt.Value, pt.Quality = uns.Float(f.Float64), uns.Quality(q)
				pts = append(pts, pt)
			}
			rows.Close()
			if len(pts) != 86400 {
				b.Fatalf("%d points", len(pts))
			}
		}
	})
}

// BenchmarkTrendDay: a 1,000-point chart of one day at 1 Hz.
func BenchmarkTrendDay(b *testing.B) {
	h, p, t0 := yearOfSeconds(b)
	ctx := context.Background()
	from := dayOfYear(t0)
	for b.Loop() {
		if _, err := h.Downsample(ctx, p, from, from.Add(24*time.Hour), 1000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAggregateYearHourly: hourly averages of a year at 1 Hz.
func BenchmarkAggregateYearHourly(b *testing.B) {
	h, p, t0 := yearOfSeconds(b)
	ctx := context.Background()
	for b.Loop() {
		bs, err := h.Aggregate(ctx, p, t0, t0.Add(time.Duration(yearSeconds)*time.Second), time.Hour, AggAvg)
		if err != nil || len(bs) != yearSeconds/3600 {
			b.Fatalf("%d buckets, %v", len(bs), err)
		}
	}
}

// TestMain removes the benchmarks' years of data when the run ends.
func TestMain(m *testing.M) {
	code := m.Run()
	if f := &yearFixture; f.dir != "" {
		if f.h != nil {
			f.h.Close()
		}
		os.RemoveAll(f.dir)
	}
	if f := yearManyBench.f; f != nil {
		if f.h != nil {
			f.h.Close()
		}
		os.RemoveAll(filepath.Dir(f.path))
	}
	os.Exit(code)
}

// BenchmarkBytesPerValue: the file size per stored value for the demo's
// kiln signals (13 tags, one read a second), after a checkpoint.
func BenchmarkBytesPerValue(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		dir := b.TempDir()
		h, err := Open(ctx, Options{Path: filepath.Join(dir, "h.duckdb")})
		if err != nil {
			b.Fatal(err)
		}
		kiln, err := sim.New("kiln1", sim.Settings{Interval: time.Second, StartHot: true, Seed: 7})
		if err != nil {
			b.Fatal(err)
		}
		base := uns.Path("limeworks/ghent/kilns/line1/kiln1")
		var tags []uns.Tag
		for _, td := range kiln.Tags() {
			tags = append(tags, uns.Tag{Path: base + "/" + uns.Path(td.Name), DataType: td.DataType})
		}
		if err := h.UpsertTags(ctx, tags); err != nil {
			b.Fatal(err)
		}
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var batch []uns.Sample
		values := 0
		day := 24 * 3600
		if testing.Short() { // a smoke check of the steps (make test)
			day = 3600
		}
		for i := range day { // a day
			now := t0.Add(time.Duration(i) * time.Second)
			for _, r := range kiln.Step(now, 1) {
				batch = append(batch, uns.Sample{Path: base + "/" + uns.Path(r.Tag), TS: now, Value: r.Value, Quality: r.Quality})
			}
			if len(batch) >= 10000 {
				if err := h.WriteBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
				values += len(batch)
				batch = batch[:0]
			}
		}
		if err := h.WriteBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		values += len(batch)
		if _, err := h.Rollup(ctx); err != nil {
			b.Fatal(err)
		}
		h.Close()
		st, err := os.Stat(filepath.Join(dir, "h.duckdb"))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st.Size())/float64(values), "bytes/value")
	}
}
