package historian

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Points come in arrival order, second by second and tag by tag, so each
// of DuckDB's row groups holds every tag, and a read of one tag scans
// them all (BenchmarkOneTagOfMany). Once a chunk of ten minutes is
// closed, compaction writes its points again ordered by (tag, ts): the
// row groups of that chunk then hold a few tags each, and DuckDB's zone
// maps skip those of other tags. The rewrite is one transaction (the
// points are deleted and inserted in order), so a reader sees the chunk
// before or after, never without it, and nothing is stored twice. A late
// value for a compacted chunk is appended as any late value is.

// compactChunk is the span of time rewritten at once.
const compactChunk = 10 * time.Minute

// compactAfter is how long after a chunk ends (by the newest value
// written) it is compacted: late values mostly come before.
const compactAfter = 10 * time.Minute

// compactEvery is how often the maintenance looks for chunks to compact.
const compactEvery = 30 * time.Second

// Compact rewrites, in (tag, ts) order, every chunk of points that ends
// before before and has not been rewritten yet, oldest first; it returns
// how many chunks. The writer waits for each chunk's rewrite.
func (h *Historian) Compact(ctx context.Context, before time.Time) (int, error) {
	n := 0
	for ctx.Err() == nil {
		done, err := h.compactNext(ctx, before)
		if err != nil || !done {
			return n, err
		}
		n++
	}
	return n, ctx.Err()
}

// compactNext rewrites the oldest chunk not rewritten yet that ends
// before before; false when there is none.
func (h *Historian) compactNext(ctx context.Context, before time.Time) (bool, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	var next sql.NullTime
	err := h.conn.QueryRowContext(ctx, `SELECT time_bucket(INTERVAL 10 MINUTE, min(ts)) FROM points
WHERE ts >= coalesce((SELECT max(chunk) + INTERVAL 10 MINUTE FROM points_compacted), '-infinity'::TIMESTAMPTZ)`).Scan(&next)
	if err != nil {
		return false, h.renewConn(fmt.Errorf("historian: the next chunk to compact: %w", err))
	}
	if !next.Valid || next.Time.Add(compactChunk).After(before) {
		return false, nil
	}
	from, to := next.Time.UTC(), next.Time.UTC().Add(compactChunk)
	tx, err := h.conn.BeginTx(ctx, nil)
	if err != nil {
		return false, h.renewConn(err)
	}
	defer tx.Rollback()
	for _, q := range []string{
		`CREATE OR REPLACE TEMP TABLE compact_rows AS SELECT * FROM points WHERE ts >= $1 AND ts < $2`,
		`DELETE FROM points WHERE ts >= $1 AND ts < $2`,
		`INSERT INTO points SELECT * FROM compact_rows ORDER BY tag_id, ts`,
		`INSERT INTO points_compacted VALUES ($1) ON CONFLICT DO NOTHING`,
		`DROP TABLE compact_rows`,
	} {
		if _, err := tx.ExecContext(ctx, q, from, to); err != nil {
			return false, fmt.Errorf("historian: compact the 10 minutes from %s: %w", from.Format(time.RFC3339), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, h.renewConn(fmt.Errorf("historian: compact the 10 minutes from %s: %w", from.Format(time.RFC3339), err))
	}
	return true, nil
}

// compactPass rewrites the closed chunks by the clock of the values
// written, at most max of them, for the maintenance loop.
func (h *Historian) compactPass(ctx context.Context, max int) {
	h.wmu.Lock()
	clock := h.clock
	h.wmu.Unlock()
	if clock.IsZero() {
		return
	}
	for range max {
		done, err := h.compactNext(ctx, clock.Add(-compactAfter))
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				h.log.Error("compaction failed; trying again later", "err", err)
			}
			return
		}
		if !done {
			return
		}
	}
}
