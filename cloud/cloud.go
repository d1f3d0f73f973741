// Package cloud is the Calx cloud runtime: the MQTT broker with its auth,
// ACL and ingest hooks, the Sparkplug primary host, the archiver that feeds
// the historian, and the live fan-out. It wires the store's backbone and
// historian together; HTTP lives in web/.
package cloud

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/store/historian"
)

// Options configure the cloud.
type Options struct {
	// DataDir holds the backbone's files and the history file.
	DataDir string
	MQTT    BrokerOptions
	// NATSListen exposes the backbone to NATS clients; empty means no port.
	// A port needs NATSUsers; NATSTLS makes it NATS over TLS.
	NATSListen string
	NATSUsers  []store.NATSUser
	NATSTLS    *tls.Config
	// HostID is the Sparkplug primary host id. Default "calx".
	HostID string
	// Uplink, when set, makes the cloud the primary host on the plant's
	// own broker too (uplink.go).
	Uplink *UplinkOptions
	// SyncInterval is the backbone's fsync interval (see store.Options).
	SyncInterval time.Duration
	// Retention rules of the historian, applied every RetentionEvery
	// (default an hour), the first time a minute after start.
	Retention      []historian.RetentionRule
	RetentionEvery time.Duration
	// Health are the thresholds of the fleet's health and alarms.
	Health HealthOptions
	// UNSInterval is how often at most a tag's retained UNS JSON on the
	// broker is updated: 0 is DefaultUNSInterval, negative every value.
	UNSInterval time.Duration
	Logger      *slog.Logger
}

// Cloud is a running cloud.
type Cloud struct {
	opts Options
	log  *slog.Logger

	Bus       *store.Bus
	Historian *historian.Historian
	Broker    *Broker
	Host      *Host
	Registry  *Registry
	Hub       *Hub
	Fleet     *Fleet
	Health    *FleetMonitor
	Metrics   *Metrics
	arch      *archiver
	transform *transformer
	repub     *republisher
	uplink    *uplink
	accounts  jetstream.KeyValue

	started     time.Time
	once        sync.Once
	stopRollups func()
	stopHealth  func()
}

// New validates opts.
func New(opts Options) (*Cloud, error) {
	if opts.DataDir == "" {
		return nil, errors.New("cloud: data dir required")
	}
	if opts.HostID == "" {
		opts.HostID = "calx"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cloud{opts: opts, log: opts.Logger, Registry: NewRegistry(), Metrics: newMetrics()}, nil
}

// Start brings the cloud up: backbone, historian, broker, host, archiver and
// live fan-out. On error what was started is shut down again.
func (c *Cloud) Start(ctx context.Context) (err error) {
	c.started = time.Now()
	defer func() {
		if err != nil {
			c.Shutdown(context.Background())
		}
	}()
	bus, err := store.NewBus(store.Options{Dir: filepath.Join(c.opts.DataDir, "jetstream"), Listen: c.opts.NATSListen, Users: c.opts.NATSUsers, TLS: c.opts.NATSTLS,
		SyncInterval: c.opts.SyncInterval, Logger: c.log})
	if err != nil {
		return err
	}
	if err := bus.Start(ctx); err != nil {
		return err
	}
	c.Bus = bus
	h, err := historian.Open(ctx, historian.Options{Path: filepath.Join(c.opts.DataDir, "history.duckdb"), Logger: c.log})
	if err != nil {
		return err
	}
	c.Historian = h
	rctx, stopRollups := context.WithCancel(context.Background())
	rollupsDone := make(chan struct{})
	go func() {
		defer close(rollupsDone)
		c.maintain(rctx, h)
	}()
	c.stopRollups = func() { stopRollups(); <-rollupsDone }
	js := bus.JetStream()
	c.Broker, err = newBroker(c.opts.MQTT, js, c.log)
	if err != nil {
		return err
	}
	if err := c.openAccounts(ctx); err != nil {
		return err
	}
	if err := c.Broker.start(); err != nil {
		return err
	}
	hubConn, err := bus.Connect("calx-live")
	if err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	if c.Hub, err = newHub(hubConn, c.log); err != nil {
		return err
	}
	repubConn, err := bus.Connect("calx-uns-mqtt")
	if err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	every := cmp.Or(c.opts.UNSInterval, DefaultUNSInterval)
	if c.repub, err = newRepublisher(repubConn, c.Registry, c.Broker, max(every, 0), c.log); err != nil {
		return err
	}
	var pub Publisher = c.Broker
	if c.opts.Uplink != nil {
		if c.uplink, err = newUplink(*c.opts.Uplink, c.opts.HostID, c.Broker.ingest, c.Broker, c.log); err != nil {
			return err
		}
		pub = fanout{local: c.Broker, up: c.uplink, log: c.log}
	}
	if c.Fleet, err = newFleet(ctx, bus.JetStream(), c.Broker, pub, c.log); err != nil {
		return err
	}
	hostJS, err := c.jetStream("calx-host")
	if err != nil {
		return err
	}
	c.Host, err = newHost(HostOptions{ID: c.opts.HostID, Claims: c.Fleet}, hostJS, pub, h, c.Registry, c.log)
	if err != nil {
		return err
	}
	if err := c.Host.start(ctx); err != nil {
		return err
	}
	if err := c.Broker.srv.Subscribe(c.Host.stateTopic(), 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		c.Host.onOwnState(pk.Payload)
	}); err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	if c.uplink != nil {
		// Online on the plant's broker once the host runs; each connect
		// puts the edges' configurations there again.
		c.uplink.connected = func() {
			if err := c.Fleet.republishAll(context.Background()); err != nil {
				c.log.Warn("configurations not sent to the plant's broker", "err", err)
			}
		}
		c.uplink.start()
	}
	archJS, err := c.jetStream("calx-archiver")
	if err != nil {
		return err
	}
	transformJS, err := c.jetStream("calx-transform")
	if err != nil {
		return err
	}
	c.transform = newTransformer(transformJS, c.Fleet, c.Registry, h, c.Broker, c.Hub, c.log)
	if err := c.transform.start(ctx); err != nil {
		return err
	}
	c.arch = newArchiver(archJS, h, c.Metrics, c.log)
	if err := c.arch.start(ctx); err != nil {
		return err
	}
	c.Health = newFleetMonitor(c.Host, c.Registry, c.Broker, c.opts.Health, c.log)
	hctx, stopHealth := context.WithCancel(context.Background())
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		c.Health.run(hctx)
	}()
	c.stopHealth = func() { stopHealth(); <-healthDone }
	c.log.Info("cloud ready", "mqtt", c.Broker.Addr(), "data_dir", c.opts.DataDir, "host_id", c.opts.HostID)
	return nil
}

// jetStream opens a connection of its own for a component, so that one
// component's flow control does not stall another's.
func (c *Cloud) jetStream(name string) (jetstream.JetStream, error) {
	nc, err := c.Bus.Connect(name)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	return js, nil
}

// Ready reports whether the cloud accepts and processes data.
func (c *Cloud) Ready() bool { return c.ReadyErr() == nil }

// ReadyErr says why the cloud is not ready to take edges: still starting,
// or its MQTT listener unable to accept; nil when ready.
func (c *Cloud) ReadyErr() error {
	if c.Host == nil || !c.Host.ready.Load() || c.arch == nil {
		return errors.New("starting")
	}
	if err := c.Broker.Err(); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	if c.uplink != nil && !c.uplink.up.Load() {
		return errors.New("not connected to the plant's broker")
	}
	return nil
}

// UplinkStats are the counters of the connection to the plant's broker
// (zero without one).
func (c *Cloud) UplinkStats() UplinkStats {
	if c.uplink == nil {
		return UplinkStats{}
	}
	return c.uplink.stats()
}

// Started is when Start was called.
func (c *Cloud) Started() time.Time { return c.started }

// ArchiverStats are the archiver's counters.
type ArchiverStats struct {
	Written     uint64
	Batches     uint64
	Malformed   uint64
	LastLatency time.Duration
	Pending     uint64 // messages in the UNS stream not yet written
}

// ArchiverStats returns the archiver's counters, asking the backbone for
// its consumer's backlog.
func (c *Cloud) ArchiverStats(ctx context.Context) ArchiverStats {
	st := c.archiverCounters()
	if c.arch == nil {
		return st
	}
	if cons, err := c.Bus.JetStream().Consumer(ctx, store.StreamUNS, consumerHistorian); err == nil {
		if info, err := cons.Info(ctx); err == nil {
			st.Pending = info.NumPending + uint64(info.NumAckPending)
		}
	}
	return st
}

// ArchiverStatsFrom returns the archiver's counters with its backlog taken
// from lags, as ConsumerLags listed them.
func (c *Cloud) ArchiverStatsFrom(lags []ConsumerLag) ArchiverStats {
	st := c.archiverCounters()
	for _, l := range lags {
		if l.Stream == store.StreamUNS && l.Consumer == consumerHistorian {
			st.Pending = l.Pending + uint64(l.AckPending)
		}
	}
	return st
}

func (c *Cloud) archiverCounters() ArchiverStats {
	if c.arch == nil {
		return ArchiverStats{}
	}
	return ArchiverStats{Written: c.arch.written.Load(), Batches: c.arch.batches.Load(),
		Malformed: c.arch.malformed.Load(), LastLatency: time.Duration(c.arch.lastLatency.Load())}
}

// Shutdown stops everything in reverse order. The broker stops taking data
// first; the host and archiver finish what is in hand, and the archiver gets
// until ctx's deadline to drain what is left into the historian. What it
// does not drain stays in the backbone for the next start. Safe to call twice.
func (c *Cloud) Shutdown(ctx context.Context) error {
	var errs []error
	c.once.Do(func() {
		if c.stopHealth != nil {
			c.stopHealth()
		}
		if c.Host != nil && c.Host.goOffline() {
			// The broker writes to its clients beside the publish: give it
			// the moment it takes to tell subscribers (edges) the host is
			// offline before their connections close.
			time.Sleep(100 * time.Millisecond)
		}
		if c.uplink != nil {
			c.uplink.close()
		}
		if c.repub != nil {
			c.repub.close()
		}
		if c.Broker != nil {
			if err := c.Broker.close(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.Host != nil {
			c.Host.stopLoop()
		}
		if c.transform != nil {
			c.transform.stop()
		}
		if c.arch != nil {
			c.drain(ctx)
			c.arch.stop()
		}
		if c.Hub != nil {
			c.Hub.close()
		}
		if c.stopRollups != nil {
			c.stopRollups()
		}
		if c.Historian != nil {
			if err := c.Historian.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.Bus != nil {
			c.Bus.Shutdown()
		}
		c.log.Info("cloud stopped")
	})
	return errors.Join(errs...)
}

// drain waits until the archiver has written everything the host produced,
// or ctx ends.
func (c *Cloud) drain(ctx context.Context) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
	}
	began, first := time.Now(), uint64(0)
	for i := 0; ctx.Err() == nil; i++ {
		pending := c.ArchiverStats(ctx).Pending
		if i == 0 {
			first = pending
		}
		if pending == 0 {
			c.log.Info("drain finished: the historian holds everything in the backbone",
				"backlog_msgs", first, "took", time.Since(began).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	left, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.log.Warn("drain timed out: the rest stays in the backbone for the next start",
		"pending", c.ArchiverStats(left).Pending)
}

// maintain keeps the historian's rollups current and applies retention.
func (c *Cloud) maintain(ctx context.Context, h *historian.Historian) {
	if len(c.opts.Retention) == 0 {
		h.RunRollups(ctx, 2*time.Second)
		return
	}
	every := cmp.Or(c.opts.RetentionEvery, time.Hour)
	next := time.Now().Add(min(time.Minute, every))
	roll := time.NewTicker(2 * time.Second)
	defer roll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-roll.C:
		}
		h.RollupPass(ctx)
		if time.Now().Before(next) {
			continue
		}
		next = time.Now().Add(every)
		res, err := h.ApplyRetention(ctx, c.opts.Retention, time.Now())
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error("retention failed; trying again later", "err", err)
			}
			continue
		}
		if res != (historian.RetentionResult{}) {
			c.log.Info("retention applied", "exported", res.Exported, "deleted", res.Deleted, "rollups_deleted", res.RollupsDeleted)
		}
	}
}
