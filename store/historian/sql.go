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

// Tables a read-only query may read.
var queryTables = []string{"tags", "points", "audit", "rollup_1m", "points_archive", "cycles", "cycle_values", "alarm_journal"}

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

// Query runs one read-only SELECT on the history, for engineers: it must be
// a single SELECT (DuckDB's own parser says so) that reads only the
// historian's tables, at most maxRows rows of it come back, and it is
// interrupted after timeout.
func (h *Historian) Query(ctx context.Context, q string, maxRows int, timeout time.Duration) (*QueryResult, error) {
	q = strings.TrimRight(strings.TrimSpace(q), "; \t\n")
	if q == "" {
		return nil, fmt.Errorf("%w: empty", ErrNotAllowed)
	}
	if err := h.checkQuery(ctx, q); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rows, err := h.db.QueryContext(ctx, "SELECT * FROM ("+q+") LIMIT "+strconv.Itoa(maxRows+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: stopped after %s", ErrNotAllowed, timeout)
		}
		return nil, fmt.Errorf("%w: %v", ErrNotAllowed, err)
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
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: stopped after %s", ErrNotAllowed, timeout)
		}
		return nil, fmt.Errorf("%w: %v", ErrNotAllowed, err)
	}
	return res, nil
}

// checkQuery parses q with DuckDB and refuses anything but one SELECT over
// the historian's tables.
func (h *Historian) checkQuery(ctx context.Context, q string) error {
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
	ctes := map[string]bool{}
	var tables, funcs, tableFuncs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if m, ok := x["cte_map"].(map[string]any); ok {
				for _, e := range m["map"].([]any) {
					if k, ok := e.(map[string]any)["key"].(string); ok {
						ctes[strings.ToLower(k)] = true
					}
				}
			}
			switch x["type"] {
			case "BASE_TABLE":
				name, _ := x["table_name"].(string)
				tables = append(tables, strings.ToLower(name))
			case "TABLE_FUNCTION":
				if f, ok := x["function"].(map[string]any); ok {
					name, _ := f["function_name"].(string)
					tableFuncs = append(tableFuncs, strings.ToLower(name))
				}
			}
			if name, ok := x["function_name"].(string); ok {
				funcs = append(funcs, strings.ToLower(name))
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(ast.Statements[0])
	for _, t := range tables {
		if !slices.Contains(queryTables, t) && !ctes[t] {
			return fmt.Errorf("%w: table %q: only %s", ErrNotAllowed, t, strings.Join(queryTables, ", "))
		}
	}
	for _, f := range tableFuncs {
		if !slices.Contains(queryTableFuncs, f) {
			return fmt.Errorf("%w: table function %s", ErrNotAllowed, f)
		}
	}
	for _, f := range funcs {
		if slices.Contains(queryDenied, f) || strings.HasPrefix(f, "read_") {
			return fmt.Errorf("%w: function %s", ErrNotAllowed, f)
		}
	}
	return nil
}
