package historian

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// RetentionRule keeps the tags under a UNS prefix for a while: raw points
// for Raw, minute rollups for Rollups (0: forever). With Export, raw points
// are written to Parquet files, one folder per day, before they are
// deleted; they stay queryable as the view points_archive.
type RetentionRule struct {
	Prefix  string
	Raw     time.Duration
	Rollups time.Duration
	Export  bool
}

// RetentionResult says what one pass did.
type RetentionResult struct {
	Exported, Deleted, RollupsDeleted int64
}

// ArchiveDir is where exported points go: <history file>.archive/day=YYYY-MM-DD/.
func (h *Historian) ArchiveDir() string { return h.path + ".archive" }

// ruleFor returns the rule of the longest prefix that covers p.
func ruleFor(rules []RetentionRule, p uns.Path) (RetentionRule, bool) {
	best, found := RetentionRule{}, false
	for _, r := range rules {
		pre := strings.TrimSuffix(r.Prefix, "/")
		if pre == "" || string(p) == pre || strings.HasPrefix(string(p), pre+"/") {
			if !found || len(pre) > len(strings.TrimSuffix(best.Prefix, "/")) {
				best, found = r, true
			}
		}
	}
	return best, found
}

// ApplyRetention exports and deletes what the rules say is old at now. It
// runs on a connection of its own, one rule's tags at a time, so writes and
// reads go on meanwhile.
func (h *Historian) ApplyRetention(ctx context.Context, rules []RetentionRule, now time.Time) (RetentionResult, error) {
	var res RetentionResult
	groups := map[int][]int32{}
	h.idmu.RLock()
	for p, id := range h.ids {
		if r, ok := ruleFor(rules, p); ok {
			i := slices.IndexFunc(rules, func(x RetentionRule) bool { return x == r })
			groups[i] = append(groups[i], id)
		}
	}
	h.idmu.RUnlock()
	conn, err := h.db.Conn(ctx)
	if err != nil {
		return res, fmt.Errorf("historian: retention: %w", err)
	}
	defer conn.Close()
	for i, ids := range groups {
		r := rules[i]
		list := make([]string, len(ids))
		for k, id := range ids {
			list[k] = fmt.Sprint(id)
		}
		in := "(" + strings.Join(list, ",") + ")"
		if r.Raw > 0 {
			cutoff := now.Add(-r.Raw)
			if r.Export {
				n, err := h.export(ctx, conn, in, cutoff)
				if err != nil {
					return res, err
				}
				res.Exported += n
			}
			out, err := conn.ExecContext(ctx, `DELETE FROM points WHERE tag_id IN `+in+` AND ts < ?`, cutoff)
			if err != nil {
				return res, fmt.Errorf("historian: retention of %s: %w", r.Prefix, err)
			}
			n, _ := out.RowsAffected()
			res.Deleted += n
		}
		if r.Rollups > 0 {
			cutoff := now.Add(-r.Rollups)
			out, err := conn.ExecContext(ctx, `DELETE FROM rollup_1m WHERE tag_id IN `+in+` AND bucket < ?`, cutoff)
			if err != nil {
				return res, fmt.Errorf("historian: retention of %s rollups: %w", r.Prefix, err)
			}
			n, _ := out.RowsAffected()
			res.RollupsDeleted += n
			// Hours that ended by the cutoff go; the hour it falls in is
			// built again from the minutes left.
			hour := cutoff.Truncate(time.Hour)
			if _, err := conn.ExecContext(ctx, `DELETE FROM rollup_1h WHERE tag_id IN `+in+` AND bucket < ?`, hour); err != nil {
				return res, fmt.Errorf("historian: retention of %s hour rollups: %w", r.Prefix, err)
			}
			if !hour.Equal(cutoff) {
				if _, err := conn.ExecContext(ctx, markStaleHours(`(SELECT ?::TIMESTAMPTZ AS bucket)`, "TRUE"), hour); err != nil {
					return res, fmt.Errorf("historian: retention of %s hour rollups: %w", r.Prefix, err)
				}
			}
		}
	}
	if res.Exported > 0 {
		if err := h.archiveView(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}

// export writes the points of the tags in list older than cutoff to
// Parquet, a folder per day; a pass adds files, never overwrites.
func (h *Historian) export(ctx context.Context, conn *sql.Conn, in string, cutoff time.Time) (int64, error) {
	var n int64
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM points WHERE tag_id IN `+in+` AND ts < ?`, cutoff).Scan(&n); err != nil || n == 0 {
		return 0, err
	}
	if err := os.MkdirAll(h.ArchiveDir(), 0o700); err != nil {
		return 0, fmt.Errorf("historian: export: %w", err)
	}
	dir := strings.ReplaceAll(filepath.ToSlash(h.ArchiveDir()), "'", "''")
	_, err := conn.ExecContext(ctx, `COPY (
	SELECT t.path, p.ts, p.value, p.value_int, p.value_str, p.quality, strftime(p.ts AT TIME ZONE 'UTC', '%Y-%m-%d') AS day
	FROM points p JOIN tags t ON t.id = p.tag_id
	WHERE p.tag_id IN `+in+` AND p.ts < ?
) TO '`+dir+`' (FORMAT parquet, PARTITION_BY (day), APPEND, FILENAME_PATTERN 'points_{uuid}')`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("historian: export: %w", err)
	}
	return n, nil
}

// archiveView makes points_archive read every exported file.
func (h *Historian) archiveView(ctx context.Context) error {
	glob := filepath.ToSlash(filepath.Join(h.ArchiveDir(), "**", "*.parquet"))
	if m, _ := filepath.Glob(filepath.Join(h.ArchiveDir(), "*", "*.parquet")); len(m) == 0 {
		return nil
	}
	_, err := h.db.ExecContext(ctx, `CREATE OR REPLACE VIEW points_archive AS
SELECT * FROM read_parquet('`+strings.ReplaceAll(glob, "'", "''")+`', hive_partitioning = true)`)
	if err != nil {
		return fmt.Errorf("historian: archive view: %w", err)
	}
	return nil
}
