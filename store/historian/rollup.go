package historian

import (
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/calx-iiot/calx/uns"
)

// Rollups: for every tag and minute with numeric values, rollup_1m keeps
// their count, sum, lowest and highest value and when those were. Most
// minutes are summed by the writer as their values are written (sums.go).
// A write marks the other minutes it touched in rollup_dirty, in its
// transaction; Rollup recomputes the marked minutes from the points and
// clears the marks, so backfill and redelivery land in the rollups too.
// Charts of long ranges read the rollups, not the points.

const insertDirty = `INSERT OR IGNORE INTO rollup_dirty SELECT DISTINCT col1, col2 FROM appended_data`

// rollupMark is a minute of a tag to roll up.
type rollupMark struct {
	id int32
	m  int64 // unix minute
}

// writeMarks records, in the caller's transaction, the minutes to rescan
// (dirty) and those whose sums the writer keeps (opened).
func writeMarks(dc driver.Conn, dirty, opened []rollupMark) error {
	for _, set := range []struct {
		marks []rollupMark
		query string
		table string
	}{{dirty, insertDirty, "rollup_dirty"}, {opened, "", "rollup_open"}} {
		if len(set.marks) == 0 {
			continue
		}
		var app *duckdb.Appender
		var err error
		if set.query != "" {
			app, err = duckdb.NewTableAppender(dc, set.query, "", "", set.table, nil)
		} else {
			app, err = duckdb.NewAppender(dc, "", "", set.table)
		}
		if err != nil {
			return fmt.Errorf("historian: rollup marks: %w", err)
		}
		for _, k := range set.marks {
			if err = app.AppendRow(k.id, time.Unix(k.m*60, 0).UTC()); err != nil {
				break
			}
		}
		if err != nil {
			app.Close()
			return fmt.Errorf("historian: rollup marks: %w", err)
		}
		if err := app.Close(); err != nil {
			return fmt.Errorf("historian: rollup marks: %w", err)
		}
	}
	return nil
}

// Rollup writes the rollups of every minute whose sums the writer keeps,
// recomputes those of every marked minute and clears the marks; it returns
// how many minutes it wrote.
func (h *Historian) Rollup(ctx context.Context) (int64, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	n, err := h.flushSums(ctx, time.Now(), 0, true, 0)
	if err != nil {
		return n, h.renewConn(err)
	}
	m, err := h.rollup(ctx, time.Time{}, 0)
	return n + m, h.renewConn(err)
}

// RollupClosed writes the rollups of the complete minutes whose sums the
// writer keeps (sums.go), then recomputes the marked minutes that ended
// before now - grace, at most limit of them at a time, and lets writes in
// between: the minute still filling is left alone (queries read its
// points), so each minute of a tag is rolled up once, not at every pass,
// and no pass holds up the writes for long. It returns how many minutes it
// wrote.
func (h *Historian) RollupClosed(ctx context.Context, now time.Time, grace time.Duration, limit int) (int64, error) {
	before := now.Add(-grace).Truncate(time.Minute)
	var total int64
	for ctx.Err() == nil {
		h.wmu.Lock()
		n, err := h.flushSums(ctx, now, grace, false, sumsPerLimit*limit)
		err = h.renewConn(err)
		h.wmu.Unlock()
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(sumsPerLimit*limit) {
			break
		}
	}
	for ctx.Err() == nil {
		h.wmu.Lock()
		n, err := h.rollup(ctx, before, limit)
		err = h.renewConn(err)
		h.wmu.Unlock()
		total += n
		if err != nil || n < int64(limit) {
			return total, err
		}
	}
	return total, ctx.Err()
}

// rollup recomputes the marked minutes that start before before (zero: all
// of them), at most limit (0: all), oldest first.
func (h *Historian) rollup(ctx context.Context, before time.Time, limit int) (n int64, err error) {
	tx, err := h.conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("historian: rollup: %w", err)
	}
	defer tx.Rollback()
	if before.IsZero() {
		before = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	lim := "ALL"
	if limit > 0 {
		lim = fmt.Sprint(limit)
	}
	for _, q := range []string{`CREATE TEMP TABLE IF NOT EXISTS rollup_todo (tag_id INTEGER, bucket TIMESTAMPTZ)`, `DELETE FROM rollup_todo`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return 0, fmt.Errorf("historian: rollup: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO rollup_todo SELECT tag_id, bucket FROM rollup_dirty WHERE bucket < ? ORDER BY bucket, tag_id LIMIT `+lim, before)
	if err != nil {
		return 0, fmt.Errorf("historian: rollup: %w", err)
	}
	if n, err = res.RowsAffected(); err != nil || n == 0 {
		return 0, err
	}
	// The time range of the marks, as constants, prunes the scan of points
	// to the row groups that may hold them.
	var first, last time.Time
	if err := tx.QueryRowContext(ctx, `SELECT min(bucket), max(bucket) FROM rollup_todo`).Scan(&first, &last); err != nil {
		return 0, fmt.Errorf("historian: rollup: %w", err)
	}
	_, err = tx.ExecContext(ctx, `
INSERT OR REPLACE INTO rollup_1m
SELECT p.tag_id, time_bucket(INTERVAL 1 MINUTE, p.ts) AS bucket, count(p.value), sum(p.value), min(p.value), max(p.value),
	arg_min(p.ts, p.value), arg_max(p.ts, p.value)
FROM points p
WHERE p.value IS NOT NULL
	AND p.ts >= ? AND p.ts < ?
	AND (p.tag_id, time_bucket(INTERVAL 1 MINUTE, p.ts)) IN (SELECT tag_id, bucket FROM rollup_todo)
GROUP BY ALL`, first, last.Add(time.Minute))
	if err != nil {
		return 0, fmt.Errorf("historian: rollup: %w", err)
	}
	if _, err := tx.ExecContext(ctx, markStaleHours("rollup_todo", "TRUE")); err != nil {
		return 0, fmt.Errorf("historian: rollup: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM rollup_dirty WHERE (tag_id, bucket) IN (SELECT tag_id, bucket FROM rollup_todo)`); err != nil {
		return 0, fmt.Errorf("historian: rollup: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("historian: rollup: %w", err)
	}
	// Marks up to the last minute rolled up may be gone from the table:
	// the next value in such a minute must mark it again.
	for k := range h.marked {
		if k.m <= last.Unix()/60 {
			delete(h.marked, k)
		}
	}
	return n, nil
}

// Rollup passes roll up closed minutes this many marks at a time, and a
// minute counts as closed this long after its end (for values on their
// way).
// Minute sums are written sumsPerLimit times as many at a time: they cost
// no scan.
const (
	rollupChunk  = 2000
	rollupGrace  = 5 * time.Second
	sumsPerLimit = 5
)

// RollupPass recomputes the closed marked minutes once; Start runs it
// every RollupEvery.
func (h *Historian) RollupPass(ctx context.Context) {
	began := time.Now()
	n, err := h.RollupClosed(ctx, began, rollupGrace, rollupChunk)
	if err != nil && ctx.Err() == nil {
		h.log.Warn("rollup failed; trying again", "err", err)
	} else if n > 0 {
		h.log.Debug("rollup", "minutes", n, "took", time.Since(began).Round(time.Millisecond))
	}
}

// downsampleRollup is Downsample over the minute rollups, for ranges where
// a chart's bucket spans many minutes.
func (h *Historian) downsampleRollup(ctx context.Context, id int32, p uns.Path, from, to time.Time, buckets int) ([]Point, error) {
	span := max(to.Sub(from).Microseconds()+1, int64(buckets))
	src := `SELECT bucket, ts_min, vmin, ts_max, vmax FROM rollup_1m WHERE tag_id = $1 AND bucket >= $2 AND bucket <= $3`
	args := []any{id, from.Truncate(time.Minute), to, from.UnixMicro(), int64(buckets), span}
	// Charts of two-hour buckets and wider read the hour rollups where
	// they answer (hourly.go), and the minutes around and between them.
	if to.Sub(from)/time.Duration(buckets) >= hourChartBucket {
		hours, err := h.hourSources(ctx, from, to, len(args)+1)
		if err != nil {
			return nil, fmt.Errorf("historian: downsample %s: %w", p, err)
		}
		if hours.sql != "" {
			src, args = hours.sql, append(args, hours.args...)
		}
	}
	rows, err := h.db.QueryContext(ctx, `SELECT arg_min(ts_min, vmin), min(vmin), arg_max(ts_max, vmax), max(vmax) FROM (`+src+`)
GROUP BY (epoch_us(bucket) - $4) * $5 // $6 ORDER BY 1`, args...)
	if err != nil {
		return nil, fmt.Errorf("historian: downsample %s: %w", p, err)
	}
	defer rows.Close()
	var out []Point
	for rows.Next() {
		var tMin, tMax time.Time
		var vMin, vMax float64
		if err := rows.Scan(&tMin, &vMin, &tMax, &vMax); err != nil {
			return nil, fmt.Errorf("historian: downsample %s: %w", p, err)
		}
		out = appendMinMax(out, tMin, vMin, tMax, vMax, uns.Good)
	}
	// An hour goes to the chart bucket it starts in: its lowest or
	// highest point may lie in the next one.
	slices.SortFunc(out, func(a, b Point) int { return a.TS.Compare(b.TS) })
	return out, rows.Err()
}

// appendMinMax adds a bucket's lowest and highest point in time order.
func appendMinMax(out []Point, tMin time.Time, vMin float64, tMax time.Time, vMax float64, q uns.Quality) []Point {
	a := Point{TS: tMin.UTC(), Value: uns.Float(vMin), Quality: q}
	b := Point{TS: tMax.UTC(), Value: uns.Float(vMax), Quality: q}
	if b.TS.Before(a.TS) {
		a, b = b, a
	}
	out = append(out, a)
	if !b.TS.Equal(a.TS) {
		out = append(out, b)
	}
	return out
}
