package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/uns"
)

// Options configure an edge.
type Options struct {
	// Broker is the cloud broker URL: tcp://host:port or ssl://host:port.
	Broker string
	// SparkplugTemplates sends devices as Sparkplug Template instances, with
	// the definitions of their machine types in NBIRTH.
	SparkplugTemplates bool
	// ConfigVersion is the version of the cloud's configuration Devices come
	// from (see LoadApplied); 0 when they come from the local file.
	ConfigVersion uint64
	// Brokers are further servers, tried in turn when one fails or its
	// primary host goes offline.
	Brokers  []string
	Username string
	Password string
	// PasswordFile, when set, is read again at every connect: a password
	// rotated by the cloud is taken without a restart once the file holds
	// it (Password is then what it held at the start).
	PasswordFile string
	TLS          *tls.Config
	// Group and EdgeID are the Sparkplug group id and edge node id.
	Group  string
	EdgeID string
	// PrimaryHost is the Sparkplug host id whose STATE gates births; empty
	// means publish without waiting for a host.
	PrimaryHost string
	// DataDir keeps the edge's state across restarts: bdSeq and the
	// store-and-forward buffer.
	DataDir string
	// BufferMaxBytes and BufferMaxAge bound the store-and-forward buffer;
	// past them the oldest values go, and are counted. Defaults 10 GiB and
	// 30 days.
	BufferMaxBytes int64
	BufferMaxAge   time.Duration
	// DrainRate caps how many buffered values a second are sent after an
	// outage, so that a backlog cannot saturate the uplink; 0: no cap.
	DrainRate float64
	// SyncInterval is how often the buffer is fsynced: what a power cut of
	// the site PC can lose at most (a crash of the process loses nothing).
	// Zero means 1s.
	SyncInterval time.Duration
	// KeepAlive of the MQTT connection; zero means 30s.
	KeepAlive time.Duration
	// LocalMQTT is the address of the edge's own broker with UNS JSON for
	// consumers on site; empty: none.
	LocalMQTT string
	// LocalUsers are the accounts of the edge's own broker; without them
	// it takes no client unless LocalAllowAnonymous.
	LocalUsers []LocalUser
	// LocalAllowAnonymous lets clients without an account into the edge's
	// own broker (bind it to a site-only address).
	LocalAllowAnonymous bool
	// LocalTLS, when set, makes the edge's own broker MQTT over TLS.
	LocalTLS *tls.Config
	// LocalLimits bound the edge's own broker as the cloud's.
	LocalLimits guard.Limits
	// Updates let the cloud update the edge's software.
	Updates UpdateOptions
	Devices []Device
	Version string
	Logger  *slog.Logger
}

// Validate checks the options and fills defaults.
func (o *Options) Validate() error {
	var errs []error
	if o.Broker != "" && (len(o.Brokers) == 0 || o.Brokers[0] != o.Broker) {
		o.Brokers = append([]string{o.Broker}, o.Brokers...)
	}
	if len(o.Brokers) == 0 {
		errs = append(errs, errors.New("broker: required"))
	}
	for i, b := range o.Brokers {
		u, err := config.BrokerURL(b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		o.Brokers[i] = u
	}
	if err := uns.ValidateSegment(o.Group); err != nil {
		errs = append(errs, fmt.Errorf("group %q: %w", o.Group, err))
	}
	if err := uns.ValidateSegment(o.EdgeID); err != nil {
		errs = append(errs, fmt.Errorf("edge_id %q: %w", o.EdgeID, err))
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required"))
	}
	seen := map[string]bool{}
	for i, d := range o.Devices {
		if err := uns.ValidateSegment(d.ID); err != nil {
			errs = append(errs, fmt.Errorf("devices[%d] id %q: %w", i, d.ID, err))
		}
		if seen[d.ID] {
			errs = append(errs, fmt.Errorf("devices[%d]: id %q used twice", i, d.ID))
		}
		seen[d.ID] = true
		if err := d.Path.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("devices[%d] path: %w", i, err))
		}
		if d.Connector == nil {
			errs = append(errs, fmt.Errorf("devices[%d]: no connector", i))
		}
	}
	if o.BufferMaxBytes == 0 {
		o.BufferMaxBytes = 10 << 30
	}
	if o.BufferMaxAge == 0 {
		o.BufferMaxAge = 30 * 24 * time.Hour
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = time.Second
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.DrainRate < 0 {
		errs = append(errs, fmt.Errorf("drain_rate %v: must not be negative", o.DrainRate))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// metric is the edge's state of one tag.
type metric struct {
	dev     *device
	def     TagDef
	path    uns.Path
	alias   uint64
	filter  uns.Filter
	current Reading
	hasCur  bool
	lastMs  int64 // millisecond timestamp of the last value that passed the filter
}

// restampWindow bounds how far back a value's millisecond may lie behind the
// tag's previous one and still be moved after it. Further back is a source
// clock that went backwards, left as it is.
const restampWindow = 100 // ms

type device struct {
	Device
	metrics []*metric
	byName  map[string]*metric
	byAlias map[uint64]*metric
	lost    bool // the connector reported the device lost; it is dead on the wire

	// Connection status, guarded by Edge.mu.
	reads, errors uint64
	lastErr       string
	rate          rateWindow
	connAlias     uint64   // first of the node metrics Connections/<device>/...
	instAlias     uint64   // alias of the device's template instance metric
	declared      []TagDef // tags the connector declared while running
	gen           uint64   // grows with each declaration or change: the device must be born again
	retired       bool     // removed by a config; known still for what is buffered of it

	stop context.CancelFunc // stops its connector
	done chan struct{}      // closed when its connector returned
}

// Device events, sent by the node in the order they happened.
const (
	evDeath = iota + 1 // DDEATH of a device
	evBirth            // DBIRTH of a device that came back
)

type event struct {
	ev  int
	dev *device
	at  time.Time
}

// Stats are the edge's counters.
type Stats struct {
	Read     uint64 `json:"read"`     // values read from connectors
	Filtered uint64 `json:"filtered"` // values not sent because report-by-exception held them back
	Stored   uint64 `json:"stored"`   // values written to the buffer
	Sent     uint64 `json:"sent"`     // values published (a value sent again after a reconnect counts again)
	Dropped  uint64 `json:"dropped"`  // values dropped by a buffer bound or a failed buffer write
	// Restamped counts values moved to the millisecond after their tag's
	// previous value, which they shared (see accept).
	Restamped uint64 `json:"restamped"`
	// WritesRefused counts commands refused at the edge: outside the tag's
	// writable range, not a finite number.
	WritesRefused uint64 `json:"writes_refused"`
	// Buffered messages and bytes not yet confirmed by the cloud.
	BufferedMsgs  uint64 `json:"buffered_messages"`
	BufferedBytes uint64 `json:"buffered_bytes"`
	// OldestUnconfirmed is the age of the oldest buffered value.
	OldestUnconfirmed time.Duration `json:"oldest_unconfirmed_ns"`
}

// Edge is the edge runtime: connectors, report-by-exception, and the
// Sparkplug edge node that publishes to the cloud.
type Edge struct {
	opts    Options
	log     *slog.Logger
	devices []*device

	mu     sync.Mutex // report-by-exception state and the event queue
	events []event
	byPath map[uns.Path]*metric
	alias  uint64 // the last alias given
	wake   chan struct{}
	buf    *buffer
	local  *LocalBroker

	read, filtered, sent, failed, restamped, writesRefused atomic.Uint64

	cancel  context.CancelFunc
	runCtx  context.Context // of the running edge; connectors run under it
	started time.Time
	wg      sync.WaitGroup
	node    *node
	upd     *updater
	once    sync.Once

	applyMu sync.Mutex // one Apply at a time
	cfgMu   sync.Mutex
	cfg     ConfigStatus
}

// New validates opts and prepares the devices' metrics and aliases.
func New(opts Options) (*Edge, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	e := &Edge{opts: opts, log: opts.Logger.With("component", "edge", "edge", opts.EdgeID), wake: make(chan struct{}, 1),
		byPath: map[uns.Path]*metric{}}
	e.alias = uint64(nodeAliases)
	e.upd = newUpdater(e)
	e.cfg = ConfigStatus{Applied: opts.ConfigVersion, At: time.Now()}
	for _, d := range opts.Devices {
		dev := &device{Device: d, byName: map[string]*metric{}, byAlias: map[uint64]*metric{}}
		for _, td := range d.Connector.Tags() {
			if _, dup := dev.byName[td.Name]; dup {
				return nil, fmt.Errorf("edge: device %s: tag %q declared twice", d.ID, td.Name)
			}
			if err := e.addMetric(dev, td); err != nil {
				return nil, err
			}
		}
		e.devices = append(e.devices, dev)
	}
	for _, dev := range e.devices {
		dev.connAlias = e.alias + 1
		e.alias += connMetrics
		e.alias++
		dev.instAlias = e.alias
	}
	// Tags declared by connectors while running, in an earlier run: values
	// of them may still be buffered.
	for _, dev := range e.devices {
		defs, err := e.loadDeclared(dev)
		if err != nil {
			return nil, err
		}
		for _, td := range defs {
			if _, known := dev.byName[td.Name]; !known {
				if err := e.addMetric(dev, td); err != nil {
					return nil, fmt.Errorf("edge: %s: %w", e.declaredFile(dev), err)
				}
				dev.declared = append(dev.declared, td)
			}
		}
	}
	if opts.LocalMQTT != "" {
		// Its accounts and limits are checked here; it listens at Start.
		var err error
		if e.local, err = NewLocalBroker(LocalBrokerOptions{Listen: opts.LocalMQTT, Users: opts.LocalUsers, AllowAnonymous: opts.LocalAllowAnonymous,
			TLS: opts.LocalTLS, Limits: opts.LocalLimits, Logger: opts.Logger.With("edge", opts.EdgeID)}); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// addMetric gives a device a metric with the next alias. Edge.mu is held,
// or the edge is not running yet.
func (e *Edge) addMetric(dev *device, td TagDef) error {
	p := dev.Path + "/" + uns.Path(td.Name)
	if err := p.Validate(); err != nil {
		return fmt.Errorf("edge: device %s tag %q: %w", dev.ID, td.Name, err)
	}
	e.alias++
	m := &metric{dev: dev, def: td, path: p, alias: e.alias, filter: newFilter(td)}
	e.byPath[p] = m
	dev.metrics = append(dev.metrics, m)
	dev.byName[td.Name] = m
	dev.byAlias[e.alias] = m
	return nil
}

// newFilter is the report-by-exception filter of a tag; a percent
// deadband spans the tag's engineering range unless it names its own span.
func newFilter(td TagDef) uns.Filter {
	f := uns.Filter{Deadband: td.Deadband}
	if f.Span == 0 {
		f.Span = td.High - td.Low
	}
	return f
}

// metricAt returns the metric of a UNS path.
func (e *Edge) metricAt(p uns.Path) (*metric, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.byPath[p]
	return m, ok
}

// Start starts the connectors and the edge node.
func (e *Edge) Start(ctx context.Context) error {
	if err := os.MkdirAll(e.opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("edge: data dir: %w", err)
	}
	// Parts with a component key of their own get the edge's id, not its component key.
	partLog := e.opts.Logger.With("edge", e.opts.EdgeID)
	buf, err := openBuffer(ctx, e.opts.DataDir, e.opts.BufferMaxBytes, e.opts.BufferMaxAge, e.opts.SyncInterval, partLog)
	if err != nil {
		return err
	}
	e.buf = buf
	if e.local != nil {
		if err := e.local.Start(); err != nil {
			buf.close()
			return err
		}
	}
	// The loops run until Shutdown: ctx is for the start alone.
	ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.runCtx, e.started = ctx, time.Now()
	n, err := newNode(e)
	if err != nil {
		e.cancel()
		buf.close()
		return err
	}
	e.node = n
	if e.upd.resume() {
		e.wg.Go(func() { e.upd.watchTrial(ctx) })
	}
	e.wg.Go(func() { e.upd.run(ctx) })
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			if err := buf.enforceBounds(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("buffer bounds not checked", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		n.run(ctx)
	}()
	started := e.started
	e.mu.Lock()
	for _, d := range e.devices {
		d.rate.rates(started, 0, 0) // rates count from here
	}
	e.mu.Unlock()
	for _, d := range e.deviceList() {
		e.startDevice(d)
	}
	return nil
}

// deviceSink is the Sink of one device's connector.
type deviceSink struct {
	e *Edge
	d *device
}

func (s deviceSink) Emit(rs []Reading) { s.e.accept(s.d, rs) }
func (s deviceSink) Lost(err error)    { s.e.lost(s.d, err) }

func (s deviceSink) Declare(defs []TagDef) error { return s.e.declare(s.d, defs) }

func (s deviceSink) DeviceDir() string { return filepath.Join(s.e.opts.DataDir, "devices", s.d.ID) }

func (s deviceSink) LocalBroker() (url, username, password string) {
	if s.e.local == nil {
		return "", "", ""
	}
	return "tcp://" + s.e.local.dialAddr(), s.e.local.internalUser, s.e.local.internalPass
}

// lost marks a device dead: its current values go BAD and a DDEATH is queued.
func (e *Edge) lost(d *device, err error) {
	e.mu.Lock()
	d.errors++
	if err != nil {
		d.lastErr = err.Error()
	}
	if d.lost {
		e.mu.Unlock()
		return
	}
	d.lost = true
	for _, m := range d.metrics {
		m.current.Quality = uns.Bad
	}
	e.events = append(e.events, event{ev: evDeath, dev: d, at: time.Now()})
	e.mu.Unlock()
	e.log.Warn("device lost", "device", d.ID, "err", err)
	e.signal()
}

func (e *Edge) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// accept applies report-by-exception to a read and writes what passes to
// the buffer. When it returns, those values survive a crash.
func (e *Edge) accept(d *device, rs []Reading) {
	samples := make([]uns.Sample, 0, len(rs))
	e.mu.Lock()
	d.reads++
	if d.lost {
		d.lost = false
		e.events = append(e.events, event{ev: evBirth, dev: d, at: time.Now()})
	}
	for _, r := range rs {
		m, ok := d.byName[r.Tag]
		if !ok {
			continue
		}
		e.read.Add(1)
		m.current, m.hasCur = r, true
		s := uns.Sample{Path: m.path, TS: r.TS, Value: r.Value, Quality: r.Quality}
		if !m.filter.Pass(s) {
			e.filtered.Add(1)
			continue
		}
		// Sparkplug and the historian know a value by its tag and
		// millisecond: a second value in the same millisecond would be taken
		// for the first one sent again. A read that comes that quickly (a
		// ticker that waited, a burst of a subscription) goes out one
		// millisecond after the previous value instead.
		if ms := s.TS.UnixMilli(); m.lastMs != 0 && ms <= m.lastMs && m.lastMs-ms < restampWindow {
			s.TS = time.UnixMilli(m.lastMs + 1)
			e.restamped.Add(1)
		}
		m.lastMs = s.TS.UnixMilli()
		m.current.TS = s.TS // a birth repeats it under the same key
		samples = append(samples, s)
	}
	e.mu.Unlock()
	if len(samples) > 0 {
		if err := e.buf.append(context.Background(), samples); err != nil {
			e.failed.Add(uint64(len(samples)))
			e.log.Error("values not buffered, dropped", "device", d.ID, "values", len(samples), "err", err)
			return
		}
		if e.local != nil {
			for _, s := range samples {
				if m, ok := e.metricAt(s.Path); ok {
					e.local.publish(m, s)
				}
			}
		}
	}
	e.signal()
}

// Stats returns the edge's counters.
func (e *Edge) Stats() Stats {
	st := Stats{Read: e.read.Load(), Filtered: e.filtered.Load(), Sent: e.sent.Load(), Dropped: e.failed.Load(), Restamped: e.restamped.Load(),
		WritesRefused: e.writesRefused.Load()}
	if e.buf == nil {
		return st
	}
	st.Stored = e.buf.stored.Load()
	st.Dropped += e.buf.dropped.Load()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if bs, err := e.buf.state(ctx); err == nil {
		st.BufferedMsgs, st.BufferedBytes = bs.Msgs, bs.Bytes
		if bs.Msgs > 0 {
			st.OldestUnconfirmed = time.Since(bs.FirstTime)
		}
	}
	return st
}

// LocalMQTTAddr is the address of the edge's own broker, "" when it runs none.
func (e *Edge) LocalMQTTAddr() string {
	if e.local == nil {
		return ""
	}
	return e.local.Addr()
}

// Online reports whether the edge node is connected and born.
func (e *Edge) Online() bool { return e.node != nil && e.node.born.Load() }

// Shutdown stops the connectors, sends NDEATH and disconnects; safe to call
// twice.
func (e *Edge) Shutdown(ctx context.Context) error {
	e.once.Do(func() {
		if e.cancel != nil {
			e.cancel()
		}
	})
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		if e.local != nil {
			e.local.Shutdown(ctx)
		}
		if e.buf != nil {
			e.buf.close()
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("edge %s: shutdown: %w", e.opts.EdgeID, ctx.Err())
	}
}
