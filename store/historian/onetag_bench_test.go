package historian

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// manyFixture is 1,000 tags with a value a second each for 10,000
// seconds (10 M points), stored in arrival order (second by second, tag
// by tag) as the archiver writes them, and a copy of the points ordered
// by (tag, ts): the layout a read of one tag would like.
var manyFixture struct {
	once      sync.Once
	h         *Historian
	path      string
	t0        time.Time
	err       error
	compacted bool // the historian's points are compacted (in the second half of the benchmark)
}

// manyTags and manySeconds are the fixture's size (smaller with -short:
// a smoke check of the steps in make test).
var manyTags, manySeconds = 1000, 10_000

func manyTagsFixture(b *testing.B) (*Historian, time.Time) {
	f := &manyFixture
	f.once.Do(func() {
		if testing.Short() {
			manyTags, manySeconds = 20, 3600
		}
		dir, err := os.MkdirTemp("", "calx-bench-many-")
		if err != nil {
			f.err = err
			return
		}
		ctx := context.Background()
		f.path = filepath.Join(dir, "many.duckdb")
		if f.h, f.err = Open(ctx, Options{Path: f.path}); f.err != nil {
			return
		}
		f.t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		tags := make([]uns.Tag, manyTags)
		for i := range tags {
			tags[i] = uns.Tag{Path: manyPath(i), DataType: uns.TypeFloat64}
		}
		if f.err = f.h.UpsertTags(ctx, tags); f.err != nil {
			return
		}
		// Written in SQL, not through the appender: this is the reading side.
		if _, f.err = f.h.db.ExecContext(ctx, `INSERT INTO points
SELECT (i % ?) + (SELECT min(id) FROM tags), ?::TIMESTAMPTZ + to_seconds(i // ?), 900 + (hash(i) % 400), NULL, NULL, 0
FROM range(?) t(i)`, manyTags, f.t0, manyTags, manyTags*manySeconds); f.err != nil {
			return
		}
		_, f.err = f.h.db.ExecContext(ctx, `CREATE TABLE points_by_tag AS SELECT * FROM points ORDER BY tag_id, ts`)
	})
	if f.err != nil {
		b.Fatal(f.err)
	}
	return f.h, f.t0
}

func manyPath(i int) uns.Path {
	return uns.Path(fmt.Sprintf("limeworks/many/area/line/m%02d/t%03d", i/100, i%100))
}

// BenchmarkOneTagOfMany reads one tag among 1,000 whose 10 M points are
// stored in arrival order: a 1,000-point trend over the whole range and
// the tag's raw points, by the historian, and by the same SQL on the copy
// ordered by (tag, ts) in the same run, and then by the historian once it
// has compacted its closed chunks (compact.go).
func BenchmarkOneTagOfMany(b *testing.B) {
	h, t0 := manyTagsFixture(b)
	ctx := context.Background()
	p := manyPath(manyTags / 2)
	id, err := h.id(p)
	if err != nil {
		b.Fatal(err)
	}
	to := t0.Add(time.Duration(manySeconds-1) * time.Second)
	trendSQL := `SELECT min(ts), arg_min(ts, value), min(value), arg_max(ts, value), max(value), min(quality) FROM points
WHERE tag_id = ? AND ts >= ? AND ts <= ? AND value IS NOT NULL
GROUP BY (epoch_us(ts) - ?) * ? // ? ORDER BY 1`
	rawSQL := `SELECT ts, value, value_int, value_str, quality FROM points WHERE tag_id = ? AND ts >= ? AND ts <= ? ORDER BY ts`
	span := to.Sub(t0).Microseconds() + 1
	count := func(table, q string, args ...any) int {
		rows, err := h.db.QueryContext(ctx, strings.Replace(q, "FROM points", "FROM "+table, 1), args...)
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			n++
		}
		return n
	}
	arrival := func(b *testing.B) {
		if manyFixture.compacted {
			b.Skip("the fixture is compacted already: run with -count 1")
		}
	}
	b.Run("trend/historian", func(b *testing.B) {
		arrival(b)
		for b.Loop() {
			if pts, err := h.Downsample(ctx, p, t0, to, 1000); err != nil || len(pts) == 0 {
				b.Fatal(len(pts), err)
			}
		}
	})
	b.Run("trend/ordered-by-tag", func(b *testing.B) {
		for b.Loop() {
			if count("points_by_tag", trendSQL, id, t0, to, t0.UnixMicro(), int64(500), span) == 0 {
				b.Fatal("no buckets")
			}
		}
	})
	b.Run("raw/historian", func(b *testing.B) {
		arrival(b)
		for b.Loop() {
			if pts, err := h.History(ctx, p, t0, to, 0); err != nil || len(pts) != manySeconds {
				b.Fatal(len(pts), err)
			}
		}
	})
	b.Run("raw/ordered-by-tag", func(b *testing.B) {
		for b.Loop() {
			if n := count("points_by_tag", rawSQL, id, t0, to); n != manySeconds {
				b.Fatal(n)
			}
		}
	})
	// The historian's own compaction of the closed chunks (all of them
	// here: the data is old), then the same reads.
	if !manyFixture.compacted {
		began := time.Now()
		n, err := h.Compact(ctx, to.Add(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		manyFixture.compacted = true
		b.Logf("compacted %d chunks of 10 minutes (%d points) in %s", n, manyTags*manySeconds, time.Since(began).Round(time.Millisecond))
	}
	b.Run("trend/historian-compacted", func(b *testing.B) {
		for b.Loop() {
			if pts, err := h.Downsample(ctx, p, t0, to, 1000); err != nil || len(pts) == 0 {
				b.Fatal(len(pts), err)
			}
		}
	})
	b.Run("raw/historian-compacted", func(b *testing.B) {
		for b.Loop() {
			if pts, err := h.History(ctx, p, t0, to, 0); err != nil || len(pts) != manySeconds {
				b.Fatal(len(pts), err)
			}
		}
	})
	// Cold: the historian opened anew before each read, DuckDB's buffers
	// empty (the operating system's file cache is as it is).
	reopen := func(b *testing.B) {
		b.StopTimer()
		defer b.StartTimer()
		if err := manyFixture.h.Close(); err != nil {
			b.Fatal(err)
		}
		var err error
		if manyFixture.h, err = Open(ctx, Options{Path: manyFixture.path}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("trend/historian-compacted-cold", func(b *testing.B) {
		for range b.N {
			reopen(b)
			if pts, err := manyFixture.h.Downsample(ctx, p, t0, to, 1000); err != nil || len(pts) == 0 {
				b.Fatal(len(pts), err)
			}
		}
	})
	b.Run("raw/historian-compacted-cold", func(b *testing.B) {
		for range b.N {
			reopen(b)
			if pts, err := manyFixture.h.History(ctx, p, t0, to, 0); err != nil || len(pts) != manySeconds {
				b.Fatal(len(pts), err)
			}
		}
	})
}
