package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Device binds a connector to a Sparkplug device id and a place in the UNS.
type Device struct {
	ID        string   // Sparkplug device id
	Path      uns.Path // UNS path of the machine, e.g. limeworks/namur/kilns/line1/kiln1
	Connector Connector
}

// Options configure an edge.
type Options struct {
	// Broker is the cloud broker URL: tcp://host:port or ssl://host:port.
	Broker string
	// Brokers are further servers, tried in turn when one fails or its
	// primary host goes offline.
	Brokers  []string
	Username string
	Password string
	TLS      *tls.Config
	// Group and EdgeID are the Sparkplug group id and edge node id.
	Group  string
	EdgeID string
	// PrimaryHost is the Sparkplug host id whose STATE gates births; empty
	// means publish without waiting for a host.
	PrimaryHost string
	// DataDir keeps the edge's state across restarts (bdSeq).
	DataDir string
	// BufferMax bounds the values held in memory while the cloud is out of
	// reach; the oldest go first and are counted. Zero means 100000.
	BufferMax int
	Devices   []Device
	Version   string
	Logger    *slog.Logger
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
	for _, b := range o.Brokers {
		if !strings.HasPrefix(b, "tcp://") && !strings.HasPrefix(b, "ssl://") && !strings.HasPrefix(b, "tls://") {
			errs = append(errs, fmt.Errorf("broker %q: want tcp://host:port or ssl://host:port", b))
		}
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
	if o.BufferMax == 0 {
		o.BufferMax = 100000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// metric is the edge's state of one tag.
type metric struct {
	def     TagDef
	path    uns.Path
	alias   uint64
	filter  uns.Filter
	current Reading
	hasCur  bool
}

type device struct {
	Device
	metrics []*metric
	byName  map[string]*metric
	byAlias map[uint64]*metric
	lost    bool // the connector reported the device lost; it is dead on the wire
}

// Events of the send queue besides values.
const (
	evValue = iota
	evDeath // DDEATH of a device
	evBirth // DBIRTH of a device that came back
)

// queued is a value that passed report-by-exception, or a device event,
// waiting to be sent in order.
type queued struct {
	ev  int
	dev *device
	m   *metric
	r   Reading
}

// Stats are the edge's counters.
type Stats struct {
	Read     uint64 // values read from connectors
	Filtered uint64 // values not sent because report-by-exception held them back
	Sent     uint64 // values published
	Dropped  uint64 // values dropped because the buffer bound was hit
	Buffered int    // values waiting to be sent
}

// Edge is the edge runtime: connectors, report-by-exception, and the
// Sparkplug edge node that publishes to the cloud.
type Edge struct {
	opts    Options
	log     *slog.Logger
	devices []*device

	mu      sync.Mutex
	pending []queued
	wake    chan struct{}

	read, filtered, sent, dropped atomic.Uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
	node   *node
	once   sync.Once
}

// New validates opts and prepares the devices' metrics and aliases.
func New(opts Options) (*Edge, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	e := &Edge{opts: opts, log: opts.Logger.With("component", "edge", "edge", opts.EdgeID), wake: make(chan struct{}, 1)}
	alias := uint64(nodeAliases)
	for _, d := range opts.Devices {
		dev := &device{Device: d, byName: map[string]*metric{}, byAlias: map[uint64]*metric{}}
		for _, td := range d.Connector.Tags() {
			if _, dup := dev.byName[td.Name]; dup {
				return nil, fmt.Errorf("edge: device %s: tag %q declared twice", d.ID, td.Name)
			}
			p := d.Path + "/" + uns.Path(td.Name)
			if err := p.Validate(); err != nil {
				return nil, fmt.Errorf("edge: device %s tag %q: %w", d.ID, td.Name, err)
			}
			alias++
			m := &metric{def: td, path: p, alias: alias}
			m.filter.Deadband = td.Deadband
			if m.filter.Span == 0 {
				m.filter.Span = td.High - td.Low
			}
			dev.metrics = append(dev.metrics, m)
			dev.byName[td.Name] = m
			dev.byAlias[alias] = m
		}
		e.devices = append(e.devices, dev)
	}
	return e, nil
}

// Start starts the connectors and the edge node.
func (e *Edge) Start(ctx context.Context) error {
	if err := os.MkdirAll(e.opts.DataDir, 0o750); err != nil {
		return fmt.Errorf("edge: data dir: %w", err)
	}
	ctx, e.cancel = context.WithCancel(ctx)
	n, err := newNode(e)
	if err != nil {
		e.cancel()
		return err
	}
	e.node = n
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		n.run(ctx)
	}()
	for _, d := range e.devices {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := d.Connector.Run(ctx, deviceSink{e, d}); err != nil {
				e.log.Error("connector stopped", "device", d.ID, "err", err)
			}
		}()
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

// lost marks a device dead: its current values go BAD and a DDEATH is queued.
func (e *Edge) lost(d *device, err error) {
	e.mu.Lock()
	if d.lost {
		e.mu.Unlock()
		return
	}
	d.lost = true
	for _, m := range d.metrics {
		m.current.Quality = uns.Bad
	}
	e.enqueue(queued{ev: evDeath, dev: d, r: Reading{TS: time.Now()}})
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

// enqueue adds to the send queue; at the bound the oldest value goes, and is
// counted. The caller holds mu.
func (e *Edge) enqueue(q queued) {
	if len(e.pending) >= e.opts.BufferMax {
		if e.pending[0].ev == evValue {
			e.dropped.Add(1)
		}
		e.pending = e.pending[1:]
	}
	e.pending = append(e.pending, q)
}

// accept applies report-by-exception to a read and queues what passes.
func (e *Edge) accept(d *device, rs []Reading) {
	e.mu.Lock()
	passed := 0
	if d.lost {
		d.lost = false
		e.enqueue(queued{ev: evBirth, dev: d})
		passed++
	}
	for _, r := range rs {
		m, ok := d.byName[r.Tag]
		if !ok {
			continue
		}
		e.read.Add(1)
		m.current, m.hasCur = r, true
		if !m.filter.Pass(uns.Sample{TS: r.TS, Value: r.Value, Quality: r.Quality}) {
			e.filtered.Add(1)
			continue
		}
		e.enqueue(queued{dev: d, m: m, r: r})
		passed++
	}
	e.mu.Unlock()
	if passed > 0 {
		e.signal()
	}
}

// Stats returns the edge's counters.
func (e *Edge) Stats() Stats {
	e.mu.Lock()
	buffered := len(e.pending)
	e.mu.Unlock()
	return Stats{Read: e.read.Load(), Filtered: e.filtered.Load(), Sent: e.sent.Load(),
		Dropped: e.dropped.Load(), Buffered: buffered}
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
		return nil
	case <-ctx.Done():
		return fmt.Errorf("edge %s: shutdown: %w", e.opts.EdgeID, ctx.Err())
	}
}

// bdSeqStore keeps the next birth/death sequence number in the data dir.
type bdSeqStore struct{ path string }

func (s bdSeqStore) next() (uint64, error) {
	var cur uint64
	b, err := os.ReadFile(s.path)
	switch {
	case err == nil:
		cur, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || cur > 255 {
			return 0, fmt.Errorf("bdSeq file %s: bad content %q", s.path, b)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return 0, fmt.Errorf("bdSeq file: %w", err)
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint((cur+1)%256, 10)), 0o640); err != nil {
		return 0, fmt.Errorf("bdSeq file: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return 0, fmt.Errorf("bdSeq file: %w", err)
	}
	return cur, nil
}

func (e *Edge) bdSeqFile() bdSeqStore {
	return bdSeqStore{path: filepath.Join(e.opts.DataDir, "bdseq")}
}
