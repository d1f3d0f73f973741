package cloud

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/store/historian"
)

// The cloud's lifecycle, in the shape of nats-server's: New validates
// and opens nothing; Start brings the parts up in the order of steps,
// using its context for start-up alone (every loop runs until Shutdown);
// Shutdown stops them in the reverse order, each waiting for its
// goroutines, and is safe to call twice or after a failed Start.
//
// Producers are started after their consumers, so they are stopped
// before them: the primary host declares itself offline (edges buffer)
// and stops, the transforms stop, and then the archiver drains what they
// left in the backbone into the historian while the broker still stores
// what third-party nodes send, for the next start.

// step is one part of the cloud: start brings it up, stop brings it down,
// from whatever state a start that failed left it in.
type step struct {
	name        string
	start, stop func(ctx context.Context) error
}

func (c *Cloud) steps() []step {
	return []step{
		{"backbone", c.startBus, c.stopBus},
		{"historian", c.startHistorian, c.stopHistorian},
		{"broker", c.startBroker, c.stopBroker},
		{"live feed", c.startHub, c.stopHub},
		{"UNS on MQTT", c.startRepublisher, c.stopRepublisher},
		{"fleet config", c.startFleet, nil},
		{"archiver", c.startArchiver, c.stopArchiver},
		{"sinks", c.startSinks, c.stopSinks},
		{"transforms", c.startTransforms, c.stopTransforms},
		{"primary host", c.startHost, c.stopHost},
		{"plant broker", c.startUplink, c.stopUplink},
		{"fleet health", c.startHealth, c.stopHealth},
		{"edge updates", c.startUpdates, c.stopUpdates},
	}
}

// New validates opts (accounts, limits, the NATS port, the plant broker)
// and opens nothing.
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
	c := &Cloud{opts: opts, log: opts.Logger, Registry: NewRegistry(), Metrics: newMetrics()}
	var err error
	if c.Bus, err = store.NewBus(store.Options{Dir: filepath.Join(opts.DataDir, "jetstream"), Listen: opts.NATSListen, Users: opts.NATSUsers,
		TLS: opts.NATSTLS, SyncInterval: opts.SyncInterval, Cluster: opts.Cluster, Logger: c.log}); err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	if err := validSinks(opts.Sinks); err != nil {
		return nil, err
	}
	if err := opts.MQTT.validate(); err != nil {
		return nil, fmt.Errorf("cloud: broker: %w", err)
	}
	if opts.Uplink != nil {
		if _, err := newUplink(*opts.Uplink, opts.HostID, nil, nil, c.log); err != nil {
			return nil, fmt.Errorf("cloud: %w", err)
		}
	}
	return c, nil
}

// Start brings the cloud up: backbone, historian, broker, live feed,
// UNS on MQTT, fleet config, archiver, transforms, primary host, plant
// broker, fleet health and edge updates. On an error what was started is
// stopped again.
func (c *Cloud) Start(ctx context.Context) error {
	c.started = time.Now()
	for _, s := range c.steps() {
		// A step that fails is stopped too: stops take what a start left.
		c.up++
		if err := s.start(ctx); err != nil {
			c.Shutdown(context.Background())
			return fmt.Errorf("cloud: %s: %w", s.name, err)
		}
	}
	c.log.Info("cloud ready", "mqtt", c.Broker.Addr(), "data_dir", c.opts.DataDir, "host_id", c.opts.HostID)
	return nil
}

// Shutdown stops what Start started, in the reverse order. The archiver
// gets until ctx's deadline (3 s without one) to drain the backbone into
// the historian; what it does not drain stays there for the next start.
func (c *Cloud) Shutdown(ctx context.Context) error {
	var errs []error
	c.once.Do(func() {
		steps := c.steps()
		for i := c.up - 1; i >= 0; i-- {
			if steps[i].stop == nil {
				continue
			}
			if err := steps[i].stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", steps[i].name, err))
			}
		}
		c.log.Info("cloud stopped")
	})
	return errors.Join(errs...)
}

func (c *Cloud) startBus(ctx context.Context) error {
	if err := c.Bus.Start(ctx); err != nil {
		return err
	}
	if c.opts.Cluster == nil {
		return nil
	}
	var err error
	if c.jobs, err = c.Bus.Jobs(ctx); err != nil {
		return err
	}
	c.nodesKV, err = c.Bus.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketNodes, TTL: 5 * nodeEvery, History: 1})
	return err
}

func (c *Cloud) stopBus(context.Context) error {
	c.Bus.Shutdown()
	return nil
}

func (c *Cloud) startHistorian(ctx context.Context) error {
	h, err := historian.Open(ctx, historian.Options{Path: filepath.Join(c.opts.DataDir, "history.duckdb"),
		Retention: c.opts.Retention, RetentionEvery: c.opts.RetentionEvery, MemoryLimit: c.opts.HistorianMemory, Threads: c.opts.HistorianThreads, Logger: c.log})
	if err != nil {
		return err
	}
	c.Historian = h
	h.Start(ctx)
	return nil
}

func (c *Cloud) stopHistorian(context.Context) error {
	if c.Historian == nil {
		return nil
	}
	return c.Historian.Close()
}

// startBroker opens the MQTT listener with the accounts, and makes the
// connection to the plant's broker (started with the host).
func (c *Cloud) startBroker(ctx context.Context) error {
	var err error
	if c.Broker, err = newBroker(c.opts.MQTT, c.Bus.JetStream(), c.log); err != nil {
		return err
	}
	err = c.openAccounts(ctx)
	if err == nil {
		err = c.openIdentities(ctx)
	}
	if err == nil {
		err = c.openMCP(ctx)
	}
	if err == nil && c.opts.Uplink != nil {
		c.uplink, err = newUplink(*c.opts.Uplink, c.opts.HostID, c.Broker.ingest, c.Broker, c.log)
	}
	if err == nil && c.opts.Cluster != nil {
		err = c.startBridge(ctx)
	}
	if err == nil && c.opts.Cluster != nil {
		c.accountWatch, err = c.watchAccounts(ctx)
	}
	if err == nil {
		err = c.Broker.start()
	}
	if err != nil {
		c.Broker.close()
	}
	return err
}

func (c *Cloud) stopBroker(context.Context) error {
	if c.Broker == nil {
		return nil
	}
	c.accountWatch.stop()
	c.bridge.close()
	return c.Broker.close()
}

// startBridge joins the broker to the other nodes' (bridge.go), with the
// cluster's retained messages in it before it takes clients.
func (c *Cloud) startBridge(ctx context.Context) error {
	nc, err := c.Bus.Connect("calx-bridge")
	if err != nil {
		return err
	}
	if c.bridge, err = newBridge(ctx, c.Bus.Node(), nc, c.Bus.JetStream(), c.Broker.srv, c.log); err != nil {
		nc.Close()
		return err
	}
	return c.Broker.srv.AddHook(&bridgeHook{b: c.bridge}, nil)
}

// publisher is where the cloud's own messages go: the broker, and the
// plant's broker when the cloud is its primary host too.
func (c *Cloud) publisher() Publisher {
	var local Publisher = c.Broker
	if c.bridge != nil {
		local = c.bridge // every node's broker
	}
	if c.uplink != nil {
		return fanout{local: local, up: c.uplink, log: c.log}
	}
	return local
}

func (c *Cloud) startHub(context.Context) error {
	conn, err := c.Bus.Connect("calx-live")
	if err != nil {
		return err
	}
	c.Hub, err = newHub(conn, c.Bus.Node(), c.log)
	return err
}

func (c *Cloud) stopHub(context.Context) error {
	if c.Hub != nil {
		c.Hub.close()
	}
	return nil
}

func (c *Cloud) startRepublisher(context.Context) error {
	conn, err := c.Bus.Connect("calx-uns-mqtt")
	if err != nil {
		return err
	}
	every := cmp.Or(c.opts.UNSInterval, DefaultUNSInterval)
	c.repub, err = newRepublisher(conn, c.Bus.Node(), c.Registry, c.Broker, max(every, 0), c.log)
	return err
}

func (c *Cloud) stopRepublisher(context.Context) error {
	if c.repub != nil {
		c.repub.close()
	}
	return nil
}

func (c *Cloud) startFleet(ctx context.Context) error {
	var err error
	c.Fleet, err = newFleet(ctx, c.Bus.JetStream(), c.Broker, c.publisher(), c.log)
	return err
}

func (c *Cloud) startArchiver(ctx context.Context) error {
	js, err := c.jetStream("calx-archiver")
	if err != nil {
		return err
	}
	c.arch = newArchiver(js, c.Historian, c.Metrics, c.log)
	return c.arch.start(ctx)
}

// stopArchiver drains the backbone into the historian (until ctx's
// deadline) and stops the archiver.
func (c *Cloud) stopArchiver(ctx context.Context) error {
	if c.arch == nil || c.arch.cancel == nil {
		return nil // never ran
	}
	c.drain(ctx)
	c.arch.stop()
	return nil
}

func (c *Cloud) startTransforms(ctx context.Context) error {
	js, err := c.jetStream("calx-transform")
	if err != nil {
		return err
	}
	if c.opts.Cluster != nil {
		c.transforms = c.runJob(JobTransforms, c.transformsTerm(js))
		return nil
	}
	t := newTransformer(js, c.Fleet, c.Registry, c.Historian, c.Broker, c.Hub, c.log)
	if err := t.start(ctx); err != nil {
		return err
	}
	c.transform.Store(t)
	return nil
}

func (c *Cloud) stopTransforms(context.Context) error {
	if c.transforms != nil {
		c.transforms.stop()
	} else if t := c.transform.Load(); t != nil {
		t.stop()
	}
	return nil
}

// startHost restores the births, declares the host online and answers a
// STATE offline of its own id seen while it runs.
func (c *Cloud) startHost(ctx context.Context) error {
	js, err := c.jetStream("calx-host")
	if err != nil {
		return err
	}
	ho := HostOptions{ID: c.opts.HostID, Claims: c.Fleet}
	if c.jobs != nil {
		ho.Node, ho.Acting = c.Bus.Node(), func() bool { return c.jobs.Holds(JobHost) }
	}
	if c.Host, err = newHost(ho, js, c.publisher(), c.Historian, c.Registry, c.log); err != nil {
		return err
	}
	if err := c.Host.start(ctx); err != nil {
		return err
	}
	if err := c.Broker.srv.Subscribe(c.Host.stateTopic(), 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		c.Host.onOwnState(pk.Payload)
	}); err != nil {
		return err
	}
	if c.jobs != nil {
		if c.forgets, err = c.followForgets(); err != nil {
			return err
		}
		c.hostJob = c.runJob(JobHost, c.hostTerm)
		c.quorum = goJob(c.watchQuorum)
	}
	return nil
}

// stopHost declares the host offline while the broker still runs, and
// waits for its loop to finish the batch in hand.
func (c *Cloud) stopHost(context.Context) error {
	c.quorum.stop()
	c.hostJob.stop()
	if c.forgets != nil {
		_ = c.forgets.Unsubscribe()
	}
	if c.Host == nil {
		return nil
	}
	if c.Host.goOffline() {
		// The broker writes to its clients beside the publish: give it
		// the moment it takes to tell subscribers (edges) the host is
		// offline.
		time.Sleep(100 * time.Millisecond)
	}
	c.Host.stopLoop()
	return nil
}

// startUplink connects to the plant's broker, when there is one; each
// connect puts the edges' configurations there again.
func (c *Cloud) startUplink(context.Context) error {
	if c.uplink == nil {
		return nil
	}
	c.uplink.connected = func() {
		if err := c.Fleet.republishAll(context.Background()); err != nil {
			c.log.Warn("configurations not sent to the plant's broker", "err", err)
		}
	}
	c.uplink.start()
	return nil
}

func (c *Cloud) stopUplink(context.Context) error {
	if c.uplink != nil {
		c.uplink.close()
	}
	return nil
}

func (c *Cloud) startHealth(context.Context) error {
	c.Health = newFleetMonitor(c.Host, c.Registry, c.Broker, c.opts.Health, c.log)
	c.Health.start()
	return nil
}

func (c *Cloud) startUpdates(ctx context.Context) error {
	var err error
	c.Updates, err = newUpdates(ctx, c.Bus.JetStream(), c.opts.ReleaseKey, c.Broker, c.publisher(), c.Fleet,
		filepath.Join(c.opts.DataDir, "releases"), c.log)
	if err != nil {
		return err
	}
	c.Updates.edges = c.Health.Edges
	c.Updates.accounts = func() []string {
		var out []string
		for _, a := range c.MQTTAccounts() {
			if a.Role == RoleEdge && !a.Disabled {
				out = append(out, a.Group+"/"+a.EdgeID)
			}
		}
		return out
	}
	if c.jobs != nil { // the primary host's node drives the rollouts
		c.Updates.runs = func() bool { return c.jobs.Holds(JobHost) }
	}
	return c.Updates.start()
}

func (c *Cloud) stopUpdates(context.Context) error {
	if c.Updates != nil {
		c.Updates.stop()
	}
	return nil
}

func (c *Cloud) stopHealth(context.Context) error {
	if c.Health != nil {
		c.Health.stop()
	}
	return nil
}
