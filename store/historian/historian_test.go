package historian

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

func openTest(t testing.TB, path string) *Historian {
	t.Helper()
	h, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestWriteIsIdempotentAndSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "history.duckdb")
	h := openTest(t, path)
	p := uns.Path("limeworks/namur/kilns/line1/kiln1/o2_pct")
	if err := h.UpsertTags(ctx, []uns.Tag{{Path: p, DataType: uns.TypeFloat64, Unit: "%",
		Sparkplug: uns.SparkplugAddr{Group: "limeworks", Edge: "namur", Device: "kiln1", Metric: "o2_pct"}}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var batch []uns.Sample
	for i := range 100 {
		batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(i) * time.Second), Value: uns.Float(float64(i))})
	}
	// The same sample twice in one batch, and the whole batch twice.
	batch = append(batch, batch[5])
	for range 2 {
		if err := h.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	str := uns.Path("limeworks/namur/kilns/line1/kiln1/state")
	if err := h.WriteBatch(ctx, []uns.Sample{
		{Path: str, TS: t0, Value: uns.String("running")},
		{Path: str, TS: t0.Add(time.Second), Value: uns.Null, Quality: uns.Bad},
	}); err != nil {
		t.Fatal(err)
	}
	n, err := h.Count(ctx, p)
	if err != nil || n != 100 {
		t.Fatalf("count = %d, %v; want 100", n, err)
	}
	h.Close()

	h2 := openTest(t, path)
	pts, err := h2.History(ctx, p, t0.Add(10*time.Second), t0.Add(19*time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 10 || pts[0].Value.F != 10 || !pts[0].TS.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("history after reopen = %+v", pts)
	}
	spts, err := h2.History(ctx, str, t0, t0.Add(time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(spts) != 2 || spts[0].Value.S != "running" || spts[1].Quality != uns.Bad || spts[1].Value.Kind != uns.KindNull {
		t.Fatalf("string history = %+v", spts)
	}
	if _, err := h2.History(ctx, "no/such/tag", t0, t0, 0); !errors.Is(err, ErrUnknownTag) {
		t.Fatalf("unknown tag: err = %v", err)
	}
}

// BenchmarkWriteBatch measures idempotent batched writes of 10,000 values
// a call, interleaved in time as the archiver hands them over: one value a
// second of each of 100, 1,000 or 100,000 tags, so that a batch holds a
// stretch of time across every tag. Then, for as long, the bare DuckDB
// appender writes the same rows into a table without a key: it reports
// both rates and the historian's share of the bare one.
func BenchmarkWriteBatch(b *testing.B) {
	sizes := []int{100, 1000, 100_000}
	if testing.Short() { // a smoke check of the steps (make test)
		sizes = sizes[:2]
	}
	for _, tags := range sizes {
		b.Run(fmt.Sprintf("tags=%d", tags), func(b *testing.B) { benchWrite(b, tags, 10_000) })
	}
}

// TestWriteBatchSmoke runs the benchmark's steps with 1,000 tags in
// batches of 1,000 (no timing asserted): the historian and the bare
// appender both take every batch.
func TestWriteBatchSmoke(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchWrite(b, 1000, 1000) })
	if res.N == 0 || res.Extra["values/s"] <= 0 || res.Extra["bare_values/s"] <= 0 {
		t.Fatalf("write batch: %v %v", res, res.Extra)
	}
}

func benchWrite(b *testing.B, tags, batchSize int) {
	ctx := context.Background()
	h := openTest(b, filepath.Join(b.TempDir(), "bench.duckdb"))
	bare, err := openBare(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer bare.close()
	paths := make([]uns.Path, tags)
	for i := range paths {
		paths[i] = uns.Path(fmt.Sprintf("limeworks/bench/area/line/m%03d/tag%03d", i/1000, i%1000))
	}
	// The tags are born before their values come, as births put them in
	// the historian.
	born := make([]uns.Tag, len(paths))
	for i, p := range paths {
		born[i] = uns.Tag{Path: p, DataType: uns.TypeFloat64}
	}
	if err := h.UpsertTags(ctx, born); err != nil {
		b.Fatal(err)
	}
	batch := make([]uns.Sample, 0, batchSize)
	ids := make([]int32, batchSize)
	t0 := time.Now().Add(-24 * time.Hour).Truncate(time.Second)
	b.ReportAllocs()
	next := 0 // the next value, in arrival order: second by second, tag by tag
	var inHistorian, inBare time.Duration
	for b.Loop() {
		batch = batch[:0]
		for i := range batchSize {
			ts := t0.Add(time.Duration(next/tags) * time.Second)
			batch = append(batch, uns.Sample{Path: paths[next%tags], TS: ts, Value: uns.Float(float64(next % 977)), Quality: uns.Good})
			ids[i] = int32(next%tags) + 1
			next++
		}
		// The historian and the bare appender take turns with the same
		// batch, so that both see the disk as it is at that moment.
		began := time.Now()
		if err := h.WriteBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		inHistorian += time.Since(began)
		began = time.Now()
		if err := bare.append(batch, ids); err != nil {
			b.Fatal(err)
		}
		inBare += time.Since(began)
	}
	rate := float64(batchSize*b.N) / inHistorian.Seconds()
	bareRate := float64(batchSize*b.N) / inBare.Seconds()
	b.ReportMetric(rate, "values/s")
	b.ReportMetric(bareRate, "bare_values/s")
	b.ReportMetric(100*rate/bareRate, "%_of_bare")
}

// TestCancelledContextDoesNotBreakTheWriter: database/sql closes a
// connection whose context is cancelled mid-query; the next write must work.
func TestCancelledContextDoesNotBreakTheWriter(t *testing.T) {
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = h.UpsertTags(ctx, []uns.Tag{{Path: "a/b/c"}})
	_ = h.WriteBatch(ctx, []uns.Sample{{Path: "a/b/d", TS: time.Now(), Value: uns.Float(1)}})
	if err := h.WriteBatch(context.Background(), []uns.Sample{{Path: "a/b/c", TS: time.Now(), Value: uns.Float(1)}}); err != nil {
		t.Fatalf("write after a cancelled one: %v", err)
	}
	if err := h.UpsertTags(context.Background(), []uns.Tag{{Path: "a/b/e"}}); err != nil {
		t.Fatalf("upsert after a cancelled one: %v", err)
	}
}

// A death's stale marker and a value read in the same instant: whichever
// arrives first, the value is what is kept.
func TestValueReplacesMarkerOfSameInstant(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "history.duckdb"))
	p := uns.Path("limeworks/namur/kilns/line1/kiln1/fast")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	marker := func(ts time.Time) uns.Sample { return uns.Sample{Path: p, TS: ts, Value: uns.Null, Quality: uns.Bad} }
	value := func(ts time.Time, v int64) uns.Sample { return uns.Sample{Path: p, TS: ts, Value: uns.Int(v)} }
	t1, t2 := t0.Add(time.Millisecond), t0.Add(2*time.Millisecond)
	for _, batch := range [][]uns.Sample{
		{marker(t0)}, {value(t0, 1)}, // marker first, value in a later batch
		{value(t1, 2)}, {marker(t1)}, // value first, marker later
		{marker(t2), value(t2, 3), marker(t2)}, // both in one batch
		{value(t0, 9)},                         // a second value is a redelivery: first kept
	} {
		if err := h.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	pts, err := h.History(ctx, p, t0, t2, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, pt := range pts {
		if pt.Value.Kind != uns.KindInt || pt.Quality != uns.Good {
			t.Fatalf("point %+v: want a good int", pt)
		}
		got = append(got, pt.Value.I)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("values = %v, want [1 2 3]", got)
	}
}

// A rebirth repeats its tags' metadata: unchanged tags are not written,
// changed ones are, also after a reopen.
func TestUpsertTagsWritesOnlyChanges(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "history.duckdb")
	h := openTest(t, path)
	tag := uns.Tag{Path: "limeworks/namur/kilns/line1/kiln1/o2_pct", DataType: uns.TypeFloat64, Unit: "%"}
	updated := func(h *Historian) time.Time {
		var ts time.Time
		if err := h.DB().QueryRowContext(ctx, `SELECT updated_at FROM tags WHERE path = ?`, string(tag.Path)).Scan(&ts); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	if err := h.UpsertTags(ctx, []uns.Tag{tag}); err != nil {
		t.Fatal(err)
	}
	first := updated(h)
	time.Sleep(5 * time.Millisecond)
	if err := h.UpsertTags(ctx, []uns.Tag{tag}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h = openTest(t, path)
	if err := h.UpsertTags(ctx, []uns.Tag{tag}); err != nil {
		t.Fatal(err)
	}
	if got := updated(h); !got.Equal(first) {
		t.Fatalf("unchanged tag written again: updated_at %s, first %s", got, first)
	}
	tag.Unit = "vol%"
	if err := h.UpsertTags(ctx, []uns.Tag{tag}); err != nil {
		t.Fatal(err)
	}
	if got := updated(h); !got.After(first) {
		t.Fatalf("changed unit not written: updated_at %s", got)
	}
	var unit string
	h.DB().QueryRowContext(ctx, `SELECT unit FROM tags WHERE path = ?`, string(tag.Path)).Scan(&unit)
	if unit != "vol%" {
		t.Fatalf("unit = %q", unit)
	}
}

// A birth of many tags is stored in a few statements; a path given twice
// keeps the last metadata, and every tag takes values at once.
func TestUpsertManyTags(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "history.duckdb"))
	var tags []uns.Tag
	for i := range 1200 {
		tags = append(tags, uns.Tag{Path: uns.Path(fmt.Sprintf("g/e/d/t%04d", i)), DataType: uns.TypeFloat64, Unit: "bar"})
	}
	tags = append(tags, uns.Tag{Path: "g/e/d/t0007", DataType: uns.TypeFloat64, Unit: "kPa"})
	if err := h.UpsertTags(ctx, tags); err != nil {
		t.Fatal(err)
	}
	var n, distinct int
	if err := h.DB().QueryRowContext(ctx, `SELECT count(*), count(DISTINCT id) FROM tags WHERE path LIKE 'g/e/d/%'`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != 1200 || distinct != 1200 {
		t.Fatalf("%d tags, %d ids", n, distinct)
	}
	var unit string
	h.DB().QueryRowContext(ctx, `SELECT unit FROM tags WHERE path = 'g/e/d/t0007'`).Scan(&unit)
	if unit != "kPa" {
		t.Fatalf("unit of the path given twice: %q", unit)
	}
	now := time.Now()
	var batch []uns.Sample
	for _, tag := range tags[:1200] {
		batch = append(batch, uns.Sample{Path: tag.Path, TS: now, Value: uns.Float(1), Quality: uns.Good})
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var stored, matched int
	h.DB().QueryRowContext(ctx, `SELECT count(*), count(t.id) FROM points p LEFT JOIN tags t ON t.id = p.tag_id`).Scan(&stored, &matched)
	if stored != 1200 || matched != 1200 {
		t.Fatalf("%d points, %d of them with their tag", stored, matched)
	}
	// Values of tags no birth announced get bare tag rows, each value
	// under its own path.
	batch = batch[:0]
	for i := range 1500 {
		batch = append(batch, uns.Sample{Path: uns.Path(fmt.Sprintf("g/e/new/t%04d", i)), TS: now, Value: uns.Int(int64(i))})
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var wrong int
	h.DB().QueryRowContext(ctx, `SELECT count(*) FROM points p JOIN tags t ON t.id = p.tag_id
WHERE t.path LIKE 'g/e/new/%' AND t.path <> printf('g/e/new/t%04d', p.value_int)`).Scan(&wrong)
	h.DB().QueryRowContext(ctx, `SELECT count(*) FROM tags WHERE path LIKE 'g/e/new/%'`).Scan(&n)
	if wrong != 0 || n != 1500 {
		t.Fatalf("%d new tags, %d values under another tag's path", n, wrong)
	}
}

// Values older than a tag's newest take the late path: those stored are
// skipped (also after a reopen, when the newest come from the file), those
// missing are stored, in whatever order they come.
func TestLateValuesAreMergedOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "history.duckdb")
	h := openTest(t, path)
	p := uns.Path("limeworks/namur/kilns/line1/kiln1/co_mg")
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) uns.Sample {
		return uns.Sample{Path: p, TS: t0.Add(time.Duration(s) * time.Second), Value: uns.Int(int64(s))}
	}
	// Even seconds first, with 10 before 8 in the same batch.
	if err := h.WriteBatch(ctx, []uns.Sample{at(0), at(2), at(4), at(6), at(10), at(8)}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h = openTest(t, path)
	// A redelivery of all of it, with the odd seconds between and two new ones.
	var batch []uns.Sample
	for s := range 13 {
		batch = append(batch, at(s))
	}
	batch = append(batch, at(4), at(11))
	for range 2 {
		if err := h.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	pts, err := h.History(ctx, p, t0, t0.Add(time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 13 {
		t.Fatalf("%d points, want 13: %+v", len(pts), pts)
	}
	for i, pt := range pts {
		if pt.Value.I != int64(i) || !pt.TS.Equal(t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("point %d = %+v", i, pt)
		}
	}
	// The rollup of the minute counts every value once.
	if _, err := h.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	bs, err := h.Aggregate(ctx, p, t0, t0.Add(time.Minute), time.Minute, AggCount)
	if err != nil || len(bs) != 1 || bs[0].Value == nil || *bs[0].Value != 13 {
		t.Fatalf("count per minute = %+v, %v", bs, err)
	}
}

// A file whose points table has the (tag, ts) primary key of earlier
// versions is rebuilt without it at open, every point kept.
func TestOpenMigratesKeyedPoints(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "history.duckdb")
	h := openTest(t, path)
	p := uns.Path("limeworks/namur/kilns/line1/kiln1/nox_mg")
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	if err := h.UpsertTags(ctx, []uns.Tag{{Path: p, DataType: uns.TypeFloat64}}); err != nil {
		t.Fatal(err)
	}
	id, err := h.id(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DROP TABLE points`,
		`CREATE TABLE points (tag_id INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL, value DOUBLE, value_int BIGINT,
	value_str VARCHAR, quality UTINYINT NOT NULL, PRIMARY KEY (tag_id, ts))`,
		fmt.Sprintf(`INSERT INTO points SELECT %d, TIMESTAMPTZ '2026-03-01 00:00:00+00' + to_seconds(i), i, NULL, NULL, 0 FROM range(100) t(i)`, id),
	} {
		if _, err := h.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	h.Close()
	h = openTest(t, path)
	var keys int
	if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'points' AND constraint_type = 'PRIMARY KEY'`).Scan(&keys); err != nil || keys != 0 {
		t.Fatalf("%d keys on points, %v", keys, err)
	}
	// The newest of the tag is known: a redelivery is not stored twice.
	if err := h.WriteBatch(ctx, []uns.Sample{{Path: p, TS: t0.Add(99 * time.Second), Value: uns.Float(-1)}, {Path: p, TS: t0.Add(100 * time.Second), Value: uns.Float(100)}}); err != nil {
		t.Fatal(err)
	}
	pts, err := h.History(ctx, p, t0, t0.Add(time.Hour), 0)
	if err != nil || len(pts) != 101 || pts[99].Value.F != 99 || pts[100].Value.F != 100 {
		t.Fatalf("%d points (%v): %+v", len(pts), err, pts[max(0, len(pts)-2):])
	}
}

// BenchmarkRedelivery measures the late path: batches of 10,000 values
// (100 tags) that were all stored already, as after a crash between the
// commit and the backbone's ack, in a table of 1,000,000 values.
func BenchmarkRedelivery(b *testing.B) {
	ctx := context.Background()
	h := openTest(b, filepath.Join(b.TempDir(), "bench.duckdb"))
	tags, perTag, stored := 100, 100, 100
	if testing.Short() { // a smoke check of the steps (make test)
		stored = 5
	}
	t0 := time.Now()
	batches := make([][]uns.Sample, stored)
	for n := range batches {
		for j := range perTag {
			ts := t0.Add(time.Duration(n*perTag+j) * time.Millisecond)
			for i := range tags {
				batches[n] = append(batches[n], uns.Sample{Path: uns.Path(fmt.Sprintf("limeworks/bench/area/line/m/tag%d", i)), TS: ts, Value: uns.Float(float64(j))})
			}
		}
		if err := h.WriteBatch(ctx, batches[n]); err != nil {
			b.Fatal(err)
		}
	}
	n := 0
	for b.Loop() {
		if err := h.WriteBatch(ctx, batches[n%stored]); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(tags*perTag*b.N)/b.Elapsed().Seconds(), "values/s")
	if c, err := h.Count(ctx, ""); err != nil || c != int64(tags*perTag*stored) {
		b.Fatalf("%d values stored, %v", c, err)
	}
}

// BenchmarkRollupMinute rolls up minutes of a large namespace as the
// rollup passes do: 100,000 tags with 10 values each a minute; a minute is
// complete for a tag when the next minute's values come.
func BenchmarkRollupMinute(b *testing.B) {
	ctx := context.Background()
	h := openTest(b, filepath.Join(b.TempDir(), "bench.duckdb"))
	tags, perMinute := 100000, 10
	if testing.Short() { // a smoke check of the steps (make test)
		tags = 1000
	}
	paths := make([]uns.Path, tags)
	for i := range paths {
		paths[i] = uns.Path(fmt.Sprintf("limeworks/bench/e%03d/d/t%04d", i/100, i%100))
	}
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	batch := make([]uns.Sample, 0, tags)
	// A minute of values, written as the archiver does.
	writeMinute := func(minute int) {
		for j := range perMinute {
			batch = batch[:0]
			ts := t0.Add(time.Duration(minute)*time.Minute + time.Duration(j)*6*time.Second)
			for k, p := range paths {
				batch = append(batch, uns.Sample{Path: p, TS: ts, Value: uns.Float(float64(j + k))})
			}
			if err := h.WriteBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	writeMinute(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		writeMinute(i + 1)
		b.StartTimer()
		n, err := h.RollupClosed(ctx, t0.Add(time.Duration(i+1)*time.Minute+rollupGrace), rollupGrace, rollupChunk)
		if err != nil || n != int64(tags) {
			b.Fatalf("rolled up %d minutes of %d: %v", n, tags, err)
		}
	}
	b.ReportMetric(float64(tags*perMinute*b.N)/b.Elapsed().Seconds(), "values/s")
}
