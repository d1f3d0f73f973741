package historian

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNotAllowed is returned for a query the SQL endpoint does not run.
var ErrNotAllowed = errors.New("query not allowed")

// Tables a read-only query may read; the audit log only when the query's
// options say so (administrators).
var queryTables = []string{"tags", "points", "rollup_1m", "points_archive", "cycles", "cycle_values", "alarm_journal"}

// Table functions a read-only query may call; every other one (those that
// read files or the network among them) is refused.
var queryTableFuncs = []string{"range", "generate_series", "unnest"}

// Functions refused anywhere in a query.
var queryDenied = []string{"getenv", "current_setting", "query", "query_table", "glob"}

// QueryResult is what a read-only query returned.
type QueryResult struct {
	Columns   []string `json:"columns"`
	Rows      [][]any  `json:"rows"`
	Truncated bool     `json:"truncated"`
}

// QueryOptions bound one read-only query.
type QueryOptions struct {
	// MaxRows is how many rows come back at most (Truncated says so).
	MaxRows int
	// Timeout interrupts the query.
	Timeout time.Duration
	// Audit lets the query read the audit log.
	Audit bool
}

// Query runs one read-only SELECT on the history, for engineers: it must be
// a single SELECT (DuckDB's own parser says so) that reads only the
// historian's tables, at most opts.MaxRows rows of it come back, and it is
// interrupted after opts.Timeout. The check of the tables is a courtesy
// that names what is refused; what keeps a query from files is the engine
// itself, whose file access was switched off and locked at Open.
func (h *Historian) Query(ctx context.Context, q string, opts QueryOptions) (*QueryResult, error) {
	q = strings.TrimRight(strings.TrimSpace(q), "; \t\n")
	if q == "" {
		return nil, fmt.Errorf("%w: empty", ErrNotAllowed)
	}
	if err := h.checkQuery(ctx, q, opts.Audit); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	maxRows := opts.MaxRows
	rows, err := h.db.QueryContext(ctx, "SELECT * FROM ("+q+"\n) LIMIT "+strconv.Itoa(maxRows+1))
	if err != nil {
		return nil, queryError(ctx, err, opts.Timeout)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	res := &QueryResult{Columns: cols, Rows: [][]any{}}
	for rows.Next() {
		if len(res.Rows) == maxRows {
			res.Truncated = true
			break
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("historian: query: %w", err)
		}
		for i, v := range vals {
			switch x := v.(type) {
			case []byte:
				vals[i] = string(x)
			case time.Time:
				vals[i] = x.UTC()
			}
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, queryError(ctx, err, opts.Timeout)
	}
	return res, nil
}

// queryError is what a user is told of a failed query: DuckDB's message
// without the excerpt of the statement it ran, which is the user's query
// inside the row limit's wrapper.
func queryError(ctx context.Context, err error, timeout time.Duration) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: stopped after %s", ErrNotAllowed, timeout)
	}
	msg, _, _ := strings.Cut(err.Error(), "\nLINE ")
	return fmt.Errorf("%w: %s", ErrNotAllowed, strings.TrimSpace(msg))
}

// checkQuery parses q with DuckDB and refuses anything but one SELECT over
// the historian's tables. A name counts as a common table expression only
// inside the query that defines it.
func (h *Historian) checkQuery(ctx context.Context, q string, audit bool) error {
	var raw string
	if err := h.db.QueryRowContext(ctx, "SELECT json_serialize_sql(?::VARCHAR)::VARCHAR", q).Scan(&raw); err != nil {
		return fmt.Errorf("historian: query check: %w", err)
	}
	var ast struct {
		Error      bool   `json:"error"`
		Message    string `json:"error_message"`
		Statements []any  `json:"statements"`
	}
	if err := json.Unmarshal([]byte(raw), &ast); err != nil {
		return fmt.Errorf("historian: query check: %w", err)
	}
	if ast.Error {
		if strings.Contains(ast.Message, "Only SELECT") {
			return fmt.Errorf("%w: only SELECT", ErrNotAllowed)
		}
		return fmt.Errorf("%w: %s", ErrNotAllowed, ast.Message)
	}
	if len(ast.Statements) != 1 {
		return fmt.Errorf("%w: one statement, not %d", ErrNotAllowed, len(ast.Statements))
	}
	allowed := queryTables
	if audit {
		allowed = append(slices.Clip(allowed), "audit")
	}
	check := func(name, schema, catalog string, ctes []string) error {
		name = strings.ToLower(name)
		qualified := schema != "" || catalog != ""
		switch {
		case !qualified && slices.Contains(ctes, name):
		case (schema == "" || strings.EqualFold(schema, "main")) && catalog == "" && slices.Contains(allowed, name):
		default:
			return fmt.Errorf("%w: table %q: only %s", ErrNotAllowed, name, strings.Join(allowed, ", "))
		}
		return nil
	}
	var walk func(v any, ctes []string) error
	walk = func(v any, ctes []string) error {
		switch x := v.(type) {
		case map[string]any:
			if m, ok := x["cte_map"].(map[string]any); ok {
				// Each common table expression sees those before it, not
				// itself nor those after; the query they belong to sees
				// them all.
				entries, _ := m["map"].([]any)
				ctes = slices.Clip(ctes)
				for _, e := range entries {
					em, _ := e.(map[string]any)
					if err := walk(em["value"], ctes); err != nil {
						return err
					}
					if k, ok := em["key"].(string); ok {
						ctes = append(ctes, strings.ToLower(k))
					}
				}
			}
			switch x["type"] {
			case "BASE_TABLE":
				name, _ := x["table_name"].(string)
				schema, _ := x["schema_name"].(string)
				catalog, _ := x["catalog_name"].(string)
				if err := check(name, schema, catalog, ctes); err != nil {
					return err
				}
			case "SHOW_REF":
				// DESCRIBE or SUMMARIZE of a table: the table's name is
				// checked as a table's; of a query, the query is walked.
				if name, _ := x["table_name"].(string); name != "" {
					if err := check(name, "", "", ctes); err != nil {
						return err
					}
				}
			case "TABLE_FUNCTION":
				if f, ok := x["function"].(map[string]any); ok {
					name, _ := f["function_name"].(string)
					if !slices.Contains(queryTableFuncs, strings.ToLower(name)) {
						return fmt.Errorf("%w: table function %s", ErrNotAllowed, strings.ToLower(name))
					}
				}
			}
			if name, ok := x["function_name"].(string); ok {
				f := strings.ToLower(name)
				if slices.Contains(queryDenied, f) || strings.HasPrefix(f, "read_") {
					return fmt.Errorf("%w: function %s", ErrNotAllowed, f)
				}
			}
			for k, e := range x {
				if k == "cte_map" {
					continue // walked above, in order
				}
				if err := walk(e, ctes); err != nil {
					return err
				}
			}
		case []any:
			for _, e := range x {
				if err := walk(e, ctes); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(ast.Statements[0], nil)
}
