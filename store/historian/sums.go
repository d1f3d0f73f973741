package historian

import (
	"context"
	"database/sql/driver"
	"fmt"
	"math"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/calx-iiot/calx/uns"
)

// Minute sums kept as values are written.
//
// Rescanning the points of a minute costs more the more tags there are:
// each pass of 2,000 tag-minutes scans the whole minute. But nearly every
// value takes the new path of a write (newer than its tag's newest, see
// write.go), and a tag's new values come in time order; so when a tag's
// first value in a minute is new and nothing of that tag is stored in the
// minute yet, the writer can keep the minute's count, sum, lowest and
// highest itself, add every later new value of the minute to them, and
// write the finished sums as the minute's rollup without reading a point.
//
// Such a minute is marked in rollup_open (in the transaction of its first
// value), not in rollup_dirty, so that the scans leave it alone. Its sums
// are written, and the mark removed in the same transaction, once the tag
// has a value in a later minute, or the minute ended more than rollupGrace
// before the newest value written of any tag (values on their way in a
// backlog belong to minutes behind it), or sumsQuiet after the minute
// ended by the wall clock. A late value in the minute (a redelivery, a
// backfill) drops its sums: the minute is marked dirty and rescanned, as
// is one whose first value came after its sums were written. A write that
// fails taints every sum kept: tainted minutes are marked dirty when they
// would be written. At open, marks left in rollup_open by a process that
// stopped before writing their sums become dirty marks.

// sumsQuiet is how long after its end, by the wall clock, a minute's sums
// are written when nothing newer came.
const sumsQuiet = 10 * time.Minute

// minuteSums are the numeric values of one tag in one minute.
type minuteSums struct {
	m          int64 // unix minute
	n          int64
	sum        float64
	lo, hi     float64
	tsLo, tsHi int64 // unix microseconds
	live       bool  // in use (in Historian.sums)
	tainted    bool  // a write failed while they were kept
}

func (s *minuteSums) add(v float64, ts time.Time) {
	us := ts.UnixMicro()
	if s.n == 0 || v < s.lo {
		s.lo, s.tsLo = v, us
	}
	if s.n == 0 || v > s.hi {
		s.hi, s.tsHi = v, us
	}
	s.n++
	s.sum += v
}

// numeric is the value a sample has in the points' value column, if any.
func numeric(v uns.Value) (float64, bool) {
	switch v.Kind {
	case uns.KindFloat:
		return v.F, !math.IsNaN(v.F)
	case uns.KindInt, uns.KindBool:
		return float64(v.I), true
	}
	return 0, false
}

// unixMinute is the minute a timestamp falls in (floored, also before 1970).
func unixMinute(ts time.Time) int64 {
	s := ts.Unix()
	m := s / 60
	if s < 0 && s%60 != 0 {
		m--
	}
	return m
}

// sumsOf is the slot of a tag's current minute. The caller holds wmu.
func (h *Historian) sumsOf(id int32) *minuteSums {
	if int(id) >= len(h.sums) {
		h.sums = append(h.sums, make([]minuteSums, int(id)+1-len(h.sums))...)
	}
	return &h.sums[id]
}

// sumNew accounts a new value (newer than prev, its tag's newest before it,
// zero if none): added to the sums of its minute, or starting them (then it
// returns true: the minute needs an open mark), or, when the minute has
// stored values not in sums, left to a dirty mark (dirty true). The caller
// holds wmu.
func (h *Historian) sumNew(id int32, s *uns.Sample, prev time.Time) (open, dirty bool) {
	if s.TS.After(h.clock) {
		h.clock = s.TS
	}
	m := unixMinute(s.TS)
	a := h.sumsOf(id)
	if !a.live || a.m != m {
		if a.live { // the tag moved on: a.m is complete
			h.done[rollupMark{id, a.m}] = *a
			a.live = false
		}
		if !prev.IsZero() && !prev.Before(time.Unix(m*60, 0)) {
			return false, true
		}
		*a = minuteSums{m: m, live: true}
		open = true
	}
	if v, ok := numeric(s.Value); ok {
		a.add(v, s.TS)
	}
	return open, false
}

// sumLate drops the sums of a late value's minute, if kept. The caller
// holds wmu.
func (h *Historian) sumLate(id int32, ts time.Time) {
	k := rollupMark{id, unixMinute(ts)}
	if a := h.sumsOf(id); a.live && a.m == k.m {
		a.live = false
		h.unopen = append(h.unopen, k)
	} else if _, ok := h.done[k]; ok {
		delete(h.done, k)
		h.unopen = append(h.unopen, k)
	}
}

// taintSums is called after a failed write: the sums kept may hold values
// that are not stored. The caller holds wmu.
func (h *Historian) taintSums() {
	for i := range h.sums {
		h.sums[i].tainted = true
	}
	for k, a := range h.done {
		a.tainted = true
		h.done[k] = a
	}
}

// Kinds of rows in rollup_sums.
const (
	sumsWrite = iota // sums to write as the minute's rollup
	sumsScan         // tainted: mark dirty instead
	sumsDrop         // dropped by a late value (marked dirty then): only remove the open mark
)

const sumsTable = `CREATE TEMP TABLE IF NOT EXISTS rollup_sums (
	tag_id INTEGER NOT NULL, bucket TIMESTAMPTZ NOT NULL, n BIGINT NOT NULL, sum DOUBLE,
	vmin DOUBLE, vmax DOUBLE, ts_min TIMESTAMPTZ, ts_max TIMESTAMPTZ, kind UTINYINT NOT NULL)`

// flushSums writes the sums of the minutes that are complete (all: every
// minute kept) as their rollups, at most limit minutes (0: no limit), and
// returns how many. The caller holds wmu.
func (h *Historian) flushSums(ctx context.Context, now time.Time, grace time.Duration, all bool, limit int) (int64, error) {
	clock := h.clock
	if now.Before(clock) {
		clock = now
	}
	closedBefore := unixMinute(clock.Add(-grace)) - 1 // the last minute that ended grace before clock
	quietBefore := unixMinute(now.Add(-sumsQuiet)) - 1
	type row struct {
		k    rollupMark
		a    minuteSums
		kind uint8
	}
	var rows []row
	full := func() bool { return limit > 0 && len(rows) >= limit }
	for k, a := range h.done {
		if full() {
			break
		}
		rows = append(rows, row{k: k, a: a})
	}
	for id := range h.sums {
		if full() {
			break
		}
		a := &h.sums[id]
		if a.live && (all || a.m <= closedBefore || a.m <= quietBefore) {
			rows = append(rows, row{k: rollupMark{int32(id), a.m}, a: *a})
		}
	}
	nUnopen := 0
	for _, k := range h.unopen {
		if full() {
			break
		}
		rows = append(rows, row{k: k, kind: sumsDrop})
		nUnopen++
	}
	if len(rows) == 0 {
		return 0, nil
	}
	err := h.conn.Raw(func(dc any) error {
		c := dc.(driver.Conn)
		ex := dc.(driver.ExecerContext)
		if _, err := ex.ExecContext(ctx, sumsTable, nil); err != nil {
			return err
		}
		if _, err := ex.ExecContext(ctx, `BEGIN TRANSACTION`, nil); err != nil {
			return err
		}
		done := false
		defer func() {
			if !done {
				ex.ExecContext(context.Background(), `ROLLBACK`, nil)
			}
		}()
		app, err := duckdb.NewAppender(c, "temp", "", "rollup_sums")
		if err != nil {
			return err
		}
		for i := range rows {
			r := &rows[i]
			if r.kind == sumsWrite && r.a.tainted {
				r.kind = sumsScan
			}
			var sum, lo, hi, tsLo, tsHi any
			if r.a.n > 0 {
				sum, lo, hi = r.a.sum, r.a.lo, r.a.hi
				tsLo, tsHi = time.UnixMicro(r.a.tsLo).UTC(), time.UnixMicro(r.a.tsHi).UTC()
			}
			if err = app.AppendRow(r.k.id, time.Unix(r.k.m*60, 0).UTC(), r.a.n, sum, lo, hi, tsLo, tsHi, uint8(r.kind)); err != nil {
				break
			}
		}
		if err != nil {
			app.Close()
			return err
		}
		if err := app.Close(); err != nil {
			return err
		}
		for _, q := range []string{
			`INSERT OR REPLACE INTO rollup_1m SELECT tag_id, bucket, n, sum, vmin, vmax, ts_min, ts_max FROM rollup_sums
WHERE kind = 0 AND n > 0`,
			`INSERT OR IGNORE INTO rollup_dirty SELECT tag_id, bucket FROM rollup_sums WHERE kind = 1`,
			markStaleHours("rollup_sums", "kind = 0 AND n > 0"),
			`DELETE FROM rollup_open o USING rollup_sums s WHERE o.tag_id = s.tag_id AND o.bucket = s.bucket`,
			`DELETE FROM rollup_sums`,
			`COMMIT`,
		} {
			if _, err := ex.ExecContext(ctx, q, nil); err != nil {
				return err
			}
		}
		done = true
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("historian: write minute sums: %w", err)
	}
	for _, r := range rows {
		if r.kind == sumsDrop {
			continue
		}
		if a := &h.sums[r.k.id]; a.live && a.m == r.k.m {
			a.live = false
		} else {
			delete(h.done, r.k)
		}
	}
	h.unopen = h.unopen[nUnopen:]
	return int64(len(rows) - nUnopen), nil
}
