// Package historian owns Calx's DuckDB history: the tags and points tables,
// the batched, idempotent writer, the queries the API asks (values,
// aggregates, exports, read-only SQL, cycles, the alarm journal and its
// reports), and its own upkeep once started: minute rollups and retention.
//
// It is the only package that links DuckDB. It does not consume the backbone
// itself; cloud/ feeds it batches and acks them after WriteBatch returns.
package historian

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/calx-iiot/calx/uns"
)

// Schema is the DuckDB schema of the history file. Timestamps are UTC.
const Schema = `
CREATE SEQUENCE IF NOT EXISTS tag_ids START 1;
CREATE TABLE IF NOT EXISTS tags (
	id          INTEGER PRIMARY KEY DEFAULT nextval('tag_ids'),
	path        VARCHAR NOT NULL UNIQUE,
	datatype    VARCHAR NOT NULL DEFAULT 'unknown',
	unit        VARCHAR NOT NULL DEFAULT '',
	description VARCHAR NOT NULL DEFAULT '',
	sp_group    VARCHAR NOT NULL DEFAULT '',
	sp_edge     VARCHAR NOT NULL DEFAULT '',
	sp_device   VARCHAR NOT NULL DEFAULT '',
	sp_metric   VARCHAR NOT NULL DEFAULT '',
	updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS points (
	tag_id     INTEGER NOT NULL,
	ts         TIMESTAMPTZ NOT NULL,
	value      DOUBLE,
	value_int  BIGINT,
	value_str  VARCHAR,
	quality    UTINYINT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollup_1m (
	tag_id INTEGER NOT NULL,
	bucket TIMESTAMPTZ NOT NULL,
	n      BIGINT NOT NULL,
	sum    DOUBLE,
	vmin   DOUBLE,
	vmax   DOUBLE,
	ts_min TIMESTAMPTZ,
	ts_max TIMESTAMPTZ,
	PRIMARY KEY (tag_id, bucket)
);
CREATE TABLE IF NOT EXISTS rollup_dirty (
	tag_id INTEGER NOT NULL,
	bucket TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (tag_id, bucket)
);
CREATE TABLE IF NOT EXISTS points_compacted (
	chunk TIMESTAMPTZ PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS rollup_open (
	tag_id INTEGER NOT NULL,
	bucket TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS cycles (
	machine    VARCHAR NOT NULL,
	name       VARCHAR NOT NULL,
	start_ts   TIMESTAMPTZ NOT NULL,
	end_ts     TIMESTAMPTZ NOT NULL,
	duration_s DOUBLE NOT NULL,
	PRIMARY KEY (machine, name, start_ts)
);
CREATE TABLE IF NOT EXISTS cycle_values (
	machine   VARCHAR NOT NULL,
	name      VARCHAR NOT NULL,
	start_ts  TIMESTAMPTZ NOT NULL,
	aggregate VARCHAR NOT NULL,
	value     DOUBLE NOT NULL,
	PRIMARY KEY (machine, name, start_ts, aggregate)
);
CREATE TABLE IF NOT EXISTS alarm_journal (
	ts            TIMESTAMPTZ NOT NULL,
	alarm         VARCHAR NOT NULL,
	event         VARCHAR NOT NULL,
	state         VARCHAR NOT NULL,
	tag           VARCHAR NOT NULL,
	kind          VARCHAR NOT NULL,
	priority      VARCHAR NOT NULL,
	class         VARCHAR NOT NULL,
	value         DOUBLE,
	text          VARCHAR NOT NULL,
	limit_value   DOUBLE NOT NULL,
	username      VARCHAR NOT NULL,
	comment       VARCHAR NOT NULL,
	shelved_until TIMESTAMPTZ,
	PRIMARY KEY (alarm, ts, event)
);
CREATE TABLE IF NOT EXISTS audit (
	ts       TIMESTAMPTZ NOT NULL,
	username VARCHAR NOT NULL,
	action   VARCHAR NOT NULL,
	path     VARCHAR NOT NULL,
	value    VARCHAR NOT NULL,
	result   VARCHAR NOT NULL
);
`

// ErrUnknownTag is returned for a path the historian has never seen.
var ErrUnknownTag = errors.New("unknown tag")

// Options configure the historian.
type Options struct {
	// Path of the DuckDB file.
	Path string
	// RollupEvery is how often Start's maintenance rolls up closed
	// minutes; zero means 2 s.
	RollupEvery time.Duration
	// Retention rules, applied every RetentionEvery (zero means an hour,
	// the first time a minute after Start, or sooner when shorter).
	Retention      []RetentionRule
	RetentionEvery time.Duration
	// MemoryLimit bounds DuckDB's own memory (its buffers and the work of
	// queries, which spill to disk beyond it); zero means DefaultMemoryLimit.
	MemoryLimit int64
	// Threads DuckDB works with; zero means as many as the machine has
	// cores.
	Threads int
	Logger  *slog.Logger
}

// DefaultMemoryLimit suits a small VM: DuckDB's own default, 80 % of the
// machine's memory, leaves too little to the rest of the cloud. With it,
// loading 10 M values peaks at 178-193 MiB resident (BenchmarkLoadPeakRSS;
// 246-297 MiB at 128 MiB), and the trends' benchmarks answer as fast as
// with more. The historian's own work is in bounded pieces (minutes,
// chunks, hours a day at a time); a larger namespace may want more.
const DefaultMemoryLimit = 64 << 20

// Historian is the DuckDB store of tags and their points.
type Historian struct {
	db   *sql.DB
	log  *slog.Logger
	path string // of the DuckDB file

	wmu  sync.Mutex // one writer at a time
	conn *sql.Conn  // the writer's connection
	// marked are the rollup marks written and not rolled up since: a
	// minute of a tag is marked once, not at every batch. Guarded by wmu.
	marked map[rollupMark]struct{}
	// hoursBuilt is the end of the hour rollups built (hourly.go), in
	// Unix seconds; 0 before any.
	hoursBuilt atomic.Int64
	// newest is, per tag id, the newest timestamp stored (or about to
	// be): never older than the truth, so that a sample newer than it is
	// known to be new. Guarded by wmu.
	newest newestByTag
	// The minute sums the writer keeps (sums.go), guarded by wmu: sums by
	// tag id, of the minute of the tag's newest value; done, of minutes
	// the tag has moved past; unopen, open marks of sums dropped; clock,
	// the newest timestamp written of any tag.
	sums   []minuteSums
	done   map[rollupMark]minuteSums
	unopen []rollupMark
	clock  time.Time

	idmu sync.RWMutex
	ids  map[uns.Path]int32
	meta map[uns.Path]tagMeta // as stored, so that a rebirth that changes nothing writes nothing

	closeOnce sync.Once
	opts      Options
	// stopMaintain ends Start's maintenance and waits for it.
	stopMaintain func()
}

// tagMeta is the metadata the tags table keeps of a tag.
type tagMeta struct {
	datatype, unit, description string
	sp                          uns.SparkplugAddr
}

func metaOf(t uns.Tag) tagMeta {
	return tagMeta{datatype: t.DataType.String(), unit: t.Unit, description: t.Description, sp: t.Sparkplug}
}

// Open opens (or creates) the history file and its schema.
func Open(ctx context.Context, opts Options) (*Historian, error) {
	if opts.Path == "" {
		return nil, errors.New("historian: a file path is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		return nil, fmt.Errorf("historian: %w", err)
	}
	// No internet at run time: never try to fetch an extension.
	dsn := opts.Path + "?autoinstall_known_extensions=false&autoload_known_extensions=false"
	connector, err := duckdb.NewConnector(dsn, nil)
	if err != nil {
		return nil, fmt.Errorf("historian %s: %w", opts.Path, err)
	}
	db := sql.OpenDB(connector)
	// The history is the plant's: its file is the process's alone,
	// whatever mode a file of an earlier version had.
	if err := os.Chmod(opts.Path, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
		db.Close()
		return nil, fmt.Errorf("historian %s: %w", opts.Path, err)
	}
	if _, err := db.ExecContext(ctx, Schema+hourlySchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("historian %s: schema: %w", opts.Path, err)
	}
	// A checkpoint holds up the commit that triggers it, and costs more
	// with the table's size than with what changed: fewer, larger ones
	// hold up fewer values. The WAL a crash leaves is replayed at open.
	if _, err := db.ExecContext(ctx, `SET checkpoint_threshold = '256MB'`); err != nil {
		db.Close()
		return nil, fmt.Errorf("historian %s: %w", opts.Path, err)
	}
	if opts.MemoryLimit < 0 || opts.Threads < 0 {
		db.Close()
		return nil, errors.New("historian: memory limit and threads: not negative")
	}
	limit, threads := cmp.Or(opts.MemoryLimit, DefaultMemoryLimit), cmp.Or(opts.Threads, runtime.NumCPU())
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`SET memory_limit = '%dB'; SET threads = %d`, limit, threads)); err != nil {
		db.Close()
		return nil, fmt.Errorf("historian %s: memory limit %d B, %d threads: %w", opts.Path, limit, threads, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("historian %s: %w", opts.Path, err)
	}
	h := &Historian{opts: opts, db: db, conn: conn, path: opts.Path, log: opts.Logger.With("component", "historian"), ids: map[uns.Path]int32{}, meta: map[uns.Path]tagMeta{}, marked: map[rollupMark]struct{}{}, done: map[rollupMark]minuteSums{}}
	if err := h.migrate(ctx); err != nil {
		h.Close()
		return nil, err
	}
	// Minutes whose sums a stopped process kept are rescanned.
	for _, q := range []string{`INSERT OR IGNORE INTO rollup_dirty SELECT DISTINCT tag_id, bucket FROM rollup_open`, `DELETE FROM rollup_open`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			h.Close()
			return nil, fmt.Errorf("historian %s: rollup marks: %w", opts.Path, err)
		}
	}
	// A file from before the rollups: mark every minute, for RunRollups.
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO rollup_dirty
SELECT DISTINCT tag_id, time_bucket(INTERVAL 1 MINUTE, ts) FROM points
WHERE NOT EXISTS (SELECT 1 FROM rollup_1m) AND value IS NOT NULL`); err != nil {
		h.Close()
		return nil, fmt.Errorf("historian %s: rollups: %w", opts.Path, err)
	}
	rows, err := db.QueryContext(ctx, `SELECT id, path, datatype, unit, description, sp_group, sp_edge, sp_device, sp_metric FROM tags`)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("historian %s: %w", opts.Path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int32
		var p string
		var m tagMeta
		if err := rows.Scan(&id, &p, &m.datatype, &m.unit, &m.description, &m.sp.Group, &m.sp.Edge, &m.sp.Device, &m.sp.Metric); err != nil {
			h.Close()
			return nil, fmt.Errorf("historian %s: %w", opts.Path, err)
		}
		h.ids[uns.Path(p)] = id
		h.meta[uns.Path(p)] = m
	}
	if err := rows.Err(); err != nil {
		h.Close()
		return nil, fmt.Errorf("historian %s: %w", opts.Path, err)
	}
	if err := h.archiveView(ctx); err != nil {
		h.Close()
		return nil, err
	}
	if err := h.seal(ctx); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// DB gives read access for queries beyond this package's.
func (h *Historian) DB() *sql.DB { return h.db }

// Close flushes and closes the file; safe to call twice.
func (h *Historian) Close() error {
	var err error
	h.closeOnce.Do(func() {
		if h.stopMaintain != nil {
			h.stopMaintain()
		}
		h.wmu.Lock()
		defer h.wmu.Unlock()
		if h.conn != nil {
			if _, e := h.flushSums(context.Background(), time.Now(), 0, true, 0); e != nil {
				h.log.Warn("minute sums not written at close; they are rescanned at the next open", "err", e)
			}
			h.conn.Close()
		}
		if _, e := h.db.Exec(`CHECKPOINT`); e != nil {
			h.log.Warn("checkpoint at close failed", "err", e)
		}
		err = h.db.Close()
	})
	return err
}

// renewConn replaces the writer's connection after database/sql closed it
// (a cancelled context does that). The caller holds wmu.
func (h *Historian) renewConn(err error) error {
	if !errors.Is(err, sql.ErrConnDone) && !errors.Is(err, driver.ErrBadConn) {
		return err
	}
	conn, cerr := h.db.Conn(context.Background())
	if cerr != nil {
		return errors.Join(err, cerr)
	}
	h.conn.Close()
	h.conn = conn
	return err
}

// UpsertTags records or updates tag metadata. Tags whose metadata is
// stored as given cost no write: a node's every rebirth repeats them.
func (h *Historian) UpsertTags(ctx context.Context, tags []uns.Tag) error {
	h.idmu.RLock()
	changed := make([]uns.Tag, 0, len(tags))
	at := map[uns.Path]int{} // a path given twice: the last one counts
	for _, t := range tags {
		if m, ok := h.meta[t.Path]; ok && m == metaOf(t) {
			continue
		}
		if i, dup := at[t.Path]; dup {
			changed[i] = t
			continue
		}
		at[t.Path] = len(changed)
		changed = append(changed, t)
	}
	h.idmu.RUnlock()
	tags = changed
	if len(tags) == 0 {
		return nil
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	err := h.upsertTags(ctx, tags)
	return h.renewConn(err)
}

func (h *Historian) upsertTags(ctx context.Context, tags []uns.Tag) error {
	rows := make([][]driver.Value, len(tags))
	for i, t := range tags {
		rows[i] = []driver.Value{string(t.Path), t.DataType.String(), t.Unit, t.Description, t.Sparkplug.Group, t.Sparkplug.Edge, t.Sparkplug.Device, t.Sparkplug.Metric}
	}
	// Through a temporary table and one statement: a statement per tag
	// (or per 500) made a fleet's births take minutes.
	got, err := h.mergeTags(ctx, `CREATE TEMP TABLE IF NOT EXISTS tags_in (path VARCHAR, datatype VARCHAR, unit VARCHAR,
	description VARCHAR, sp_group VARCHAR, sp_edge VARCHAR, sp_device VARCHAR, sp_metric VARCHAR)`, "tags_in", rows,
		`INSERT INTO tags (path, datatype, unit, description, sp_group, sp_edge, sp_device, sp_metric)
SELECT * FROM tags_in ON CONFLICT (path) DO UPDATE SET datatype = excluded.datatype, unit = excluded.unit,
	description = excluded.description, sp_group = excluded.sp_group, sp_edge = excluded.sp_edge,
	sp_device = excluded.sp_device, sp_metric = excluded.sp_metric, updated_at = now()`)
	if err != nil {
		return fmt.Errorf("historian: upsert %d tags from %s: %w", len(tags), tags[0].Path, err)
	}
	h.idmu.Lock()
	maps.Copy(h.ids, got)
	for _, t := range tags {
		h.meta[t.Path] = metaOf(t)
	}
	h.idmu.Unlock()
	return nil
}

// ensureTags gives every path of samples an id, creating bare tag rows
// for the new ones, and returns them in the order of samples. The caller
// holds wmu.
func (h *Historian) ensureTags(ctx context.Context, samples []uns.Sample) ([]int32, error) {
	ids := make([]int32, len(samples))
	var missing []string
	var seen map[uns.Path]bool
	h.idmu.RLock()
	for i := range samples {
		p := samples[i].Path
		id, ok := h.ids[p]
		if ok {
			ids[i] = id
			continue
		}
		if seen == nil {
			seen = map[uns.Path]bool{}
		}
		if !seen[p] {
			seen[p] = true
			missing = append(missing, string(p))
		}
	}
	h.idmu.RUnlock()
	if len(missing) == 0 {
		return ids, nil
	}
	rows := make([][]driver.Value, len(missing))
	for i, p := range missing {
		rows[i] = []driver.Value{p}
	}
	got, err := h.mergeTags(ctx, `CREATE TEMP TABLE IF NOT EXISTS paths_in (path VARCHAR)`, "paths_in", rows,
		`INSERT INTO tags (path) SELECT path FROM paths_in ON CONFLICT (path) DO NOTHING`)
	if err != nil {
		return nil, fmt.Errorf("historian: %d new tags from %s: %w", len(missing), missing[0], err)
	}
	h.idmu.Lock()
	maps.Copy(h.ids, got)
	h.idmu.Unlock()
	for i := range samples {
		if id, ok := got[samples[i].Path]; ok {
			ids[i] = id
		}
	}
	return ids, nil
}

// mergeTags appends rows to a temporary table (made by create) and runs
// merge, which writes them into tags, in one transaction; it returns the
// ids of the paths (the first column). The caller holds wmu.
func (h *Historian) mergeTags(ctx context.Context, create, table string, rows [][]driver.Value, merge string) (map[uns.Path]int32, error) {
	got := make(map[uns.Path]int32, len(rows))
	err := h.conn.Raw(func(dc any) error {
		ex := dc.(driver.ExecerContext)
		run := func(q string) error {
			_, err := ex.ExecContext(ctx, q, nil)
			return err
		}
		if err := run(create); err != nil {
			return err
		}
		if err := run(`BEGIN TRANSACTION`); err != nil {
			return err
		}
		done := false
		defer func() {
			if !done {
				ex.ExecContext(context.Background(), `ROLLBACK`, nil)
			}
		}()
		app, err := duckdb.NewAppender(dc.(driver.Conn), "temp", "", table)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := app.AppendRow(r...); err != nil {
				app.Close()
				return err
			}
		}
		if err := app.Close(); err != nil {
			return err
		}
		if err := run(merge); err != nil {
			return err
		}
		res, err := dc.(driver.QueryerContext).QueryContext(ctx, `SELECT t.id, t.path FROM tags t SEMI JOIN `+table+` i ON t.path = i.path`, nil)
		if err != nil {
			return err
		}
		vals := make([]driver.Value, 2)
		for res.Next(vals) == nil {
			id, _ := vals[0].(int32)
			p, _ := vals[1].(string)
			got[uns.Path(p)] = id
		}
		res.Close()
		if err := run(`DELETE FROM ` + table); err != nil {
			return err
		}
		if err := run(`COMMIT`); err != nil {
			return err
		}
		done = true
		return nil
	})
	return got, err
}

// WriteBatch stores samples. It is idempotent on (tag, timestamp): a sample
// already stored is skipped, so redelivery and backfill never duplicate.
// When it returns nil, the samples are committed.
func (h *Historian) WriteBatch(ctx context.Context, samples []uns.Sample) error {
	if len(samples) == 0 {
		return nil
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.renewConn(h.writeBatch(ctx, samples))
}

// Known reports whether the historian has a tag row for p.
func (h *Historian) Known(p uns.Path) bool {
	h.idmu.RLock()
	defer h.idmu.RUnlock()
	_, ok := h.ids[p]
	return ok
}

// Count returns how many points are stored for p (all of them for "").
func (h *Historian) Count(ctx context.Context, p uns.Path) (int64, error) {
	var n int64
	var err error
	if p == "" {
		err = h.db.QueryRowContext(ctx, `SELECT count(*) FROM points`).Scan(&n)
	} else {
		err = h.db.QueryRowContext(ctx, `SELECT count(*) FROM points JOIN tags ON tags.id = points.tag_id WHERE tags.path = ?`, string(p)).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("historian: count: %w", err)
	}
	return n, nil
}
