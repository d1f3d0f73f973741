// Package cloud is the Calx cloud runtime: the MQTT broker with its auth,
// ACL and ingest hooks, the Sparkplug primary host (on its own broker and
// on a plant's), the archiver that feeds the historian, the transforms
// runner, the versioned fleet config and its rollouts, fleet health, and
// the live fan-out. lifecycle.go starts and stops them in one order; HTTP
// lives in web/.
package cloud

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
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
	// Cluster, when set, makes the cloud a node of a cluster whose
	// backbone is replicated.
	Cluster *store.Cluster
	// Version is the running build's, shown to the other nodes of a
	// cluster.
	Version string
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
	// HistorianMemory and HistorianThreads bound DuckDB (zero: 64 MiB,
	// every core).
	HistorianMemory  int64
	HistorianThreads int
	// Health are the thresholds of the fleet's health and alarms.
	Health HealthOptions
	// Sinks get every value of the UNS stream besides the historian.
	Sinks []Sink
	// ReleaseKey is the public key edge releases must be signed with;
	// nil: the cloud takes no release (docs/UPDATES.md).
	ReleaseKey ed25519.PublicKey
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
	Updates   *Updates
	Metrics   *Metrics
	arch      *archiver
	sinks     []*sinkRunner
	sinkJobs  []*job
	// transform runs here (alone always; in a cluster on one node).
	transform atomic.Pointer[transformer]
	// jobs run the cluster's one-of-each jobs; bridge joins the nodes'
	// brokers (nil alone).
	jobs         *store.Jobs
	bridge       *bridge
	accountWatch *accountWatch
	nodesKV      jetstream.KeyValue
	forgets      *nats.Subscription
	// mcpKV keeps the MCP confirmations' key, mcpAnswers the answers
	// redeemed (mcpsecret.go).
	mcpKV, mcpAnswers jetstream.KeyValue
	transforms        *job
	hostJob           *job
	quorum            *job
	repub             *republisher
	uplink            *uplink
	accounts          jetstream.KeyValue
	uiUsers           kept[UIUser]
	apiTokens         kept[APIToken]
	tokenUse          kept[TokenUse]
	// dashboards keeps the machine dashboards' layouts.
	dashboards kept[Dashboard]

	started time.Time
	up      int // the steps of lifecycle.go started
	once    sync.Once
}

// jetStream opens a connection of its own for a component, so that one
// component's flow control does not stall another's.
func (c *Cloud) jetStream(name string) (jetstream.JetStream, error) {
	nc, err := c.Bus.Connect(name)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	js, err := c.Bus.NewJetStream(nc)
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
	if !c.Bus.Quorum() {
		return errors.New("no quorum: this node does not reach a majority of the cluster's nodes, so it cannot store what edges send")
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
