package historian

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/calx-iiot/calx/transform"
)

// The transforms' records: finished production cycles with their
// aggregates, and the alarm journal. Both are written idempotently (a
// replay after a restart writes the same rows again, to no effect).

// WriteCycles stores finished cycles; a cycle already stored (same
// machine, name and start) is replaced.
func (h *Historian) WriteCycles(ctx context.Context, cycles []transform.Cycle) error {
	if len(cycles) == 0 {
		return nil
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	err := func() error {
		tx, err := h.conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for _, c := range cycles {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO cycles VALUES (?, ?, ?, ?, ?)`,
				c.Machine, c.Name, c.Start, c.End, c.End.Sub(c.Start).Seconds()); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM cycle_values WHERE machine = ? AND name = ? AND start_ts = ?`, c.Machine, c.Name, c.Start); err != nil {
				return err
			}
			for k, v := range c.Values {
				if _, err := tx.ExecContext(ctx, `INSERT INTO cycle_values VALUES (?, ?, ?, ?, ?)`, c.Machine, c.Name, c.Start, k, v); err != nil {
					return err
				}
			}
		}
		return tx.Commit()
	}()
	if err != nil {
		return h.renewConn(fmt.Errorf("historian: %d cycles from %s: %w", len(cycles), cycles[0].Machine, err))
	}
	return nil
}

// CycleQuery selects cycles: of machines under a UNS prefix, of a name,
// ending in [From, To], newest first, at most Limit.
type CycleQuery struct {
	Machine  string // a machine's path or a prefix of paths
	Name     string
	From, To time.Time
	Limit    int
}

// Cycles returns the cycles the query selects, oldest first.
func (h *Historian) Cycles(ctx context.Context, q CycleQuery) ([]transform.Cycle, error) {
	where := []string{"end_ts >= ?", "end_ts <= ?"}
	args := []any{q.From, q.To}
	if q.Machine != "" {
		where = append(where, "(machine = ? OR starts_with(machine, ?))")
		args = append(args, q.Machine, strings.TrimSuffix(q.Machine, "/")+"/")
	}
	if q.Name != "" {
		where = append(where, "name = ?")
		args = append(args, q.Name)
	}
	args = append(args, q.Limit)
	rows, err := h.db.QueryContext(ctx, `SELECT c.machine, c.name, c.start_ts, c.end_ts, v.aggregate, v.value
FROM (SELECT * FROM cycles WHERE `+strings.Join(where, " AND ")+` ORDER BY end_ts DESC LIMIT ?) c
LEFT JOIN cycle_values v USING (machine, name, start_ts)
ORDER BY c.end_ts, c.machine, c.name`, args...)
	if err != nil {
		return nil, fmt.Errorf("historian: cycles: %w", err)
	}
	defer rows.Close()
	var out []transform.Cycle
	for rows.Next() {
		var c transform.Cycle
		var agg sql.NullString
		var v sql.NullFloat64
		if err := rows.Scan(&c.Machine, &c.Name, &c.Start, &c.End, &agg, &v); err != nil {
			return nil, fmt.Errorf("historian: cycles: %w", err)
		}
		c.Start, c.End = c.Start.UTC(), c.End.UTC()
		if n := len(out); n == 0 || out[n-1].Machine != c.Machine || out[n-1].Name != c.Name || !out[n-1].Start.Equal(c.Start) {
			c.Values = map[string]float64{}
			out = append(out, c)
		}
		if agg.Valid && v.Valid {
			out[len(out)-1].Values[agg.String] = v.Float64
		}
	}
	return out, rows.Err()
}

// WriteTransitions journals alarm transitions; one already journaled
// (same alarm, time and event) is not written again.
func (h *Historian) WriteTransitions(ctx context.Context, trs []transform.Transition) error {
	if len(trs) == 0 {
		return nil
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	err := func() error {
		tx, err := h.conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for _, t := range trs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO alarm_journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
				t.TS, t.Alarm, t.Event, string(t.State), t.Tag, t.Kind, t.Priority, t.Class, t.Value, t.Text, t.Limit, t.User, t.Comment, t.Shelved); err != nil {
				return err
			}
		}
		return tx.Commit()
	}()
	if err != nil {
		return h.renewConn(fmt.Errorf("historian: %d alarm transitions of %s: %w", len(trs), trs[0].Alarm, err))
	}
	return nil
}

// JournalQuery selects alarm transitions: of alarms under a UNS prefix,
// of an event, of a class, in [From, To], at most Limit, newest first.
type JournalQuery struct {
	Alarm    string
	Event    string
	Class    string
	From, To time.Time
	Limit    int
}

// Journal returns the transitions the query selects, oldest first.
func (h *Historian) Journal(ctx context.Context, q JournalQuery) ([]transform.Transition, error) {
	where := []string{"ts >= ?", "ts <= ?"}
	args := []any{q.From, q.To}
	if q.Alarm != "" {
		where = append(where, "(alarm = ? OR starts_with(alarm, ?))")
		args = append(args, q.Alarm, strings.TrimSuffix(q.Alarm, "/")+"/")
	}
	if q.Event != "" {
		where = append(where, "event = ?")
		args = append(args, q.Event)
	}
	if q.Class != "" {
		where = append(where, "class = ?")
		args = append(args, q.Class)
	}
	args = append(args, q.Limit)
	rows, err := h.db.QueryContext(ctx, `SELECT * FROM (SELECT ts, alarm, event, state, tag, kind, priority, class, value, text, limit_value, username, comment, shelved_until
FROM alarm_journal WHERE `+strings.Join(where, " AND ")+` ORDER BY ts DESC, alarm LIMIT ?) ORDER BY ts, alarm`, args...)
	if err != nil {
		return nil, fmt.Errorf("historian: alarm journal: %w", err)
	}
	defer rows.Close()
	var out []transform.Transition
	for rows.Next() {
		var t transform.Transition
		var state string
		var v sql.NullFloat64
		var sh sql.NullTime
		if err := rows.Scan(&t.TS, &t.Alarm, &t.Event, &state, &t.Tag, &t.Kind, &t.Priority, &t.Class, &v, &t.Text, &t.Limit, &t.User, &t.Comment, &sh); err != nil {
			return nil, fmt.Errorf("historian: alarm journal: %w", err)
		}
		t.TS, t.State = t.TS.UTC(), transform.AlarmState(state)
		if v.Valid {
			f := v.Float64
			t.Value = &f
		}
		if sh.Valid {
			u := sh.Time.UTC()
			t.Shelved = &u
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
