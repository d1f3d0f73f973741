// Package postgres writes the plant's values into PostgreSQL (with or
// without TimescaleDB), for the data teams and dashboards that already use
// it: a table of tags, their points keyed by tag and time, and a view of
// one-minute rollups. It is a sink of the cloud's UNS stream: every batch
// is written in one transaction, idempotent on (tag, time), so that a
// batch delivered again after a restart or an outage changes nothing.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/calx-iiot/calx/uns"
)

// Options of a sink.
type Options struct {
	// URL is the database, postgres://user:password@host:port/db?sslmode=...
	URL string
	// Schema holds the sink's tables; default "calx".
	Schema string
}

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate checks the options.
func (o *Options) Validate() error {
	o.Schema = cmp.Or(o.Schema, "calx")
	if !identRe.MatchString(o.Schema) {
		return fmt.Errorf("postgres: schema %q: lower-case letters, digits and _", o.Schema)
	}
	if _, err := pgxpool.ParseConfig(o.URL); err != nil {
		return fmt.Errorf("postgres: url: %w", err)
	}
	return nil
}

// Sink writes batches of samples into a database. It connects lazily: a
// database that is down fails the writes (the stream keeps them) and the
// first write that reaches it makes the schema.
type Sink struct {
	o    Options
	pool *pgxpool.Pool

	mu        sync.Mutex
	ready     bool // the schema is made
	timescale bool
	tags      map[uns.Path]int32
	parts     map[string]bool // monthly partitions made
}

// Open prepares a sink; it does not connect yet.
func Open(o Options) (*Sink, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: url: %w", err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return &Sink{o: o, pool: pool, tags: map[uns.Path]int32{}, parts: map[string]bool{}}, nil
}

// Close closes the connections.
func (s *Sink) Close() { s.pool.Close() }

// TimescaleDB says whether the points are a TimescaleDB hypertable (known
// after the first write).
func (s *Sink) TimescaleDB() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timescale
}

func (s *Sink) q(name string) string { return pgx.Identifier{s.o.Schema, name}.Sanitize() }

// schema makes the tables and views once.
func (s *Sink) schema(ctx context.Context) error {
	if s.ready {
		return nil
	}
	var ts bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')`).Scan(&ts); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	points := `CREATE TABLE IF NOT EXISTS %[1]s (
		tag_id    INTEGER NOT NULL,
		ts        TIMESTAMPTZ NOT NULL,
		value     DOUBLE PRECISION,
		value_int BIGINT,
		value_str TEXT,
		quality   SMALLINT NOT NULL,
		PRIMARY KEY (tag_id, ts))`
	if !ts {
		points += ` PARTITION BY RANGE (ts)`
	}
	stmts := []string{
		fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s`, pgx.Identifier{s.o.Schema}.Sanitize()),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (id SERIAL PRIMARY KEY, path TEXT NOT NULL UNIQUE, created_at TIMESTAMPTZ NOT NULL DEFAULT now())`, s.q("tags")),
		fmt.Sprintf(points, s.q("points")),
	}
	if ts {
		stmts = append(stmts, fmt.Sprintf(`SELECT create_hypertable('%s', 'ts', if_not_exists => TRUE)`, s.o.Schema+".points"))
	}
	stmts = append(stmts,
		// Values by path, for dashboards and ad-hoc SQL.
		fmt.Sprintf(`CREATE OR REPLACE VIEW %s AS SELECT t.path, p.ts, p.value, p.value_int, p.value_str, p.quality
			FROM %s p JOIN %s t ON t.id = p.tag_id`, s.q("tag_values"), s.q("points"), s.q("tags")),
		fmt.Sprintf(`CREATE OR REPLACE VIEW %s AS SELECT t.path, date_trunc('minute', p.ts) AS bucket, count(*) AS n,
			avg(p.value) AS avg, min(p.value) AS min, max(p.value) AS max, min(p.ts) AS first_ts, max(p.ts) AS last_ts
			FROM %s p JOIN %s t ON t.id = p.tag_id GROUP BY t.path, date_trunc('minute', p.ts)`, s.q("rollup_1m"), s.q("points"), s.q("tags")))
	for _, st := range stmts {
		if _, err := s.pool.Exec(ctx, st); err != nil {
			return fmt.Errorf("postgres: schema: %w", err)
		}
	}
	if ts {
		// Compression is set once: TimescaleDB refuses to set it again on
		// a table with compressed chunks.
		var on bool
		if err := s.pool.QueryRow(ctx, `SELECT compression_enabled FROM timescaledb_information.hypertables
			WHERE hypertable_schema = $1 AND hypertable_name = 'points'`, s.o.Schema).Scan(&on); err != nil {
			return fmt.Errorf("postgres: schema: %w", err)
		}
		if !on {
			for _, st := range []string{
				fmt.Sprintf(`ALTER TABLE %s SET (timescaledb.compress, timescaledb.compress_segmentby = 'tag_id')`, s.q("points")),
				fmt.Sprintf(`SELECT add_compression_policy('%s', INTERVAL '7 days', if_not_exists => TRUE)`, s.o.Schema+".points"),
			} {
				if _, err := s.pool.Exec(ctx, st); err != nil {
					return fmt.Errorf("postgres: schema: %w", err)
				}
			}
		}
	}
	s.ready, s.timescale = true, ts
	return nil
}

// WriteBatch writes samples in one transaction: new tags, the months'
// partitions, and the points, a point already there (tag and time) taking
// the value again.
func (s *Sink) WriteBatch(ctx context.Context, samples []uns.Sample) error {
	if len(samples) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.schema(ctx); err != nil {
		return err
	}
	if err := s.tagIDs(ctx, samples); err != nil {
		return err
	}
	if err := s.partitions(ctx, samples); err != nil {
		return err
	}
	// The last value of a tag at a time wins, within the batch too (one
	// INSERT may not touch a row twice).
	type key struct {
		id int32
		ts time.Time
	}
	// PostgreSQL keeps microseconds: two values of a tag within one are one
	// row.
	at := func(sm uns.Sample) time.Time { return sm.TS.UTC().Truncate(time.Microsecond) }
	last := make(map[key]int, len(samples))
	for i, sm := range samples {
		last[key{s.tags[sm.Path], at(sm)}] = i
	}
	rows := make([][]any, 0, len(last))
	for i, sm := range samples {
		k := key{s.tags[sm.Path], at(sm)}
		if last[k] != i {
			continue
		}
		var f, vi, vs any
		switch sm.Value.Kind {
		case uns.KindFloat:
			f = sm.Value.F
		case uns.KindInt, uns.KindBool:
			f, vi = float64(sm.Value.I), sm.Value.I
		case uns.KindString:
			// A text column takes no NUL and nothing but UTF-8.
			vs = strings.ReplaceAll(strings.ToValidUTF8(sm.Value.S, "\uFFFD"), "\x00", "\uFFFD")
		}
		rows = append(rows, []any{k.id, k.ts, f, vi, vs, int16(sm.Quality)})
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE calx_stage (LIKE %s) ON COMMIT DROP`, s.q("points"))); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	cols := []string{"tag_id", "ts", "value", "value_int", "value_str", "quality"}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"calx_stage"}, cols, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("postgres: copy: %w", err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s SELECT * FROM calx_stage ON CONFLICT (tag_id, ts) DO UPDATE
		SET value = EXCLUDED.value, value_int = EXCLUDED.value_int, value_str = EXCLUDED.value_str, quality = EXCLUDED.quality`, s.q("points"))); err != nil {
		// A partition dropped or detached since: made again next time.
		clear(s.parts)
		return fmt.Errorf("postgres: insert: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

// tagIDs gives every path of the batch its id, making new tags.
func (s *Sink) tagIDs(ctx context.Context, samples []uns.Sample) error {
	var missing []string
	for _, sm := range samples {
		if _, ok := s.tags[sm.Path]; !ok && !slices.Contains(missing, string(sm.Path)) {
			missing = append(missing, string(sm.Path))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (path) SELECT unnest($1::text[]) ON CONFLICT (path) DO NOTHING`, s.q("tags")), missing); err != nil {
		return fmt.Errorf("postgres: tags: %w", err)
	}
	rows, err := s.pool.Query(ctx, fmt.Sprintf(`SELECT id, path FROM %s WHERE path = ANY($1)`, s.q("tags")), missing)
	if err != nil {
		return fmt.Errorf("postgres: tags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int32
		var p string
		if err := rows.Scan(&id, &p); err != nil {
			return fmt.Errorf("postgres: tags: %w", err)
		}
		s.tags[uns.Path(p)] = id
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: tags: %w", err)
	}
	for _, p := range missing {
		if _, ok := s.tags[uns.Path(p)]; !ok {
			return errors.New("postgres: tags: a new tag got no id")
		}
	}
	return nil
}

// partitions makes the monthly partitions of plain PostgreSQL the batch
// needs (a hypertable makes its own chunks).
func (s *Sink) partitions(ctx context.Context, samples []uns.Sample) error {
	if s.timescale {
		return nil
	}
	for _, sm := range samples {
		t := sm.TS.UTC()
		from := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		name := fmt.Sprintf("points_%04d_%02d", from.Year(), from.Month())
		if s.parts[name] {
			continue
		}
		to := from.AddDate(0, 1, 0)
		if _, err := s.pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')`,
			s.q(name), s.q("points"), from.Format(time.RFC3339), to.Format(time.RFC3339))); err != nil {
			return fmt.Errorf("postgres: partition %s: %w", name, err)
		}
		s.parts[name] = true
	}
	return nil
}
