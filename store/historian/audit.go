package historian

import (
	"context"
	"fmt"
	"time"
)

// The audit log: who wrote what, who changed which account or config.

// AuditEntry records who did what to which tag.
type AuditEntry struct {
	TS     time.Time `json:"ts"`
	User   string    `json:"user"`
	Action string    `json:"action"`
	Path   string    `json:"path"`
	Value  string    `json:"value"`
	Result string    `json:"result"`
}

// Audit appends an entry to the audit log.
func (h *Historian) Audit(ctx context.Context, e AuditEntry) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	_, err := h.conn.ExecContext(ctx, `INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)`, e.TS, e.User, e.Action, e.Path, e.Value, e.Result)
	if err != nil {
		return h.renewConn(fmt.Errorf("historian: audit: %w", err))
	}
	return nil
}

// AuditLog returns the newest audit entries, newest first.
func (h *Historian) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	rows, err := h.db.QueryContext(ctx, `SELECT ts, username, action, path, value, result FROM audit ORDER BY ts DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("historian: audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.TS, &e.User, &e.Action, &e.Path, &e.Value, &e.Result); err != nil {
			return nil, fmt.Errorf("historian: audit log: %w", err)
		}
		e.TS = e.TS.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}
