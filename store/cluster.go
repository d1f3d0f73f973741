package store

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// A cloud of several nodes: the embedded servers form a NATS cluster
// (routes between them) and JetStream replicates the streams and buckets
// across it, three copies on three nodes or more. A node that goes away
// leaves its copies on the others; a majority of the nodes keeps the
// backbone writable.

// Cluster makes the bus a node of a NATS cluster.
type Cluster struct {
	// Name is the cluster's, the same on every node.
	Name string
	// Node is this node's name, unique in the cluster.
	Node string
	// Listen is the host:port of the routes from the other nodes.
	Listen string
	// Routes are the other nodes' route addresses (host:port).
	Routes []string
	// Advertise is the address (host:port) the other nodes are told to
	// reach this node's routes at; empty: Listen's.
	Advertise string
	// Secret is shared by the nodes: a route that does not present it is
	// refused.
	Secret string
	// Wait bounds how long the node waits at its start for a majority of
	// the nodes; zero means 2 minutes.
	Wait time.Duration
	// TLS, when set, makes the routes TLS both ways: each node shows its
	// certificate and verifies the other's (config.MutualTLS).
	TLS *tls.Config
}

// routeUser is the account routes authenticate as.
const routeUser = "calx-route"

// Validate checks a cluster's settings.
func (c Cluster) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name: required"))
	}
	if c.Node == "" {
		errs = append(errs, errors.New("node: required"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("advertise %q: host:port: %w", c.Advertise, err))
		}
	}
	for i, r := range c.Routes {
		if _, _, err := net.SplitHostPort(r); err != nil {
			errs = append(errs, fmt.Errorf("routes[%d] %q: host:port of another node: %w", i, r, err))
		}
	}
	if len(c.Secret) < 16 {
		errs = append(errs, errors.New("secret: at least 16 characters, the same on every node"))
	}
	return errors.Join(errs...)
}

// Replicas is how many copies the streams and buckets keep: one per node,
// at most three.
func (c *Cluster) Replicas() int {
	if c == nil {
		return 1
	}
	return min(3, len(c.Routes)+1)
}

// serverOptions sets the routes of so.
func (c *Cluster) serverOptions(so *server.Options) error {
	host, port, _ := net.SplitHostPort(c.Listen)
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("cluster listen %q: bad port", c.Listen)
	}
	so.ServerName = c.Node
	so.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: p, Username: routeUser, Password: c.Secret,
		AuthTimeout: natsAuthTimeout, ConnectRetries: -1, TLSConfig: c.TLS, TLSTimeout: natsAuthTimeout, Advertise: c.Advertise}
	for _, r := range c.Routes {
		so.Routes = append(so.Routes, &url.URL{Scheme: "nats", Host: r, User: url.UserPassword(routeUser, c.Secret)})
	}
	if so.DontListen {
		// The server opens its routes once its client port is open: without
		// a port of the cloud's, one on loopback that no account can use
		// from the network (the process's own connect in-process).
		so.DontListen, so.Host, so.Port = false, "127.0.0.1", server.RANDOM_PORT
	}
	return nil
}

// clustered is the bus's JetStream in a cluster: its streams and buckets
// made without a count of replicas get the cluster's, and its durable
// consumers are the node's own (their names end in the node's), so that
// each node's primary host, transforms and historian read every message
// rather than sharing them with the other nodes' (one of each job in the
// whole cluster comes later: docs/CLUSTER.md).
type clustered struct {
	jetstream.JetStream
	replicas int
	node     string
	wait     time.Duration // how long a stream, bucket or consumer may take to make
}

func (r clustered) durable(name string) string {
	if name == "" {
		return ""
	}
	return name + "_" + Token(r.node)
}

func (r clustered) consumer(cfg jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	cfg.Durable, cfg.Name = r.durable(cfg.Durable), r.durable(cfg.Name)
	return cfg
}

// retry runs f until it succeeds or wait has passed, each try within two
// seconds and the next after a random pause: while the cluster forms an ask
// may time out or be refused, and when several nodes make the same stream
// or bucket at the same moment the cluster answers none of them (the
// stream is made all the same; the next try finds it).
func retry[T any](ctx context.Context, wait time.Duration, f func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(wait)
	for {
		try, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := f(try)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(time.Duration(100+rand.IntN(500)) * time.Millisecond):
		}
	}
}

func (r clustered) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = cmp.Or(cfg.Replicas, r.replicas)
	return retry(ctx, r.wait, func(ctx context.Context) (jetstream.Stream, error) { return r.JetStream.CreateOrUpdateStream(ctx, cfg) })
}

func (r clustered) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = cmp.Or(cfg.Replicas, r.replicas)
	return retry(ctx, r.wait, func(ctx context.Context) (jetstream.Stream, error) { return r.JetStream.CreateOrUpdateStream(ctx, cfg) })
}

func (r clustered) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = cmp.Or(cfg.Replicas, r.replicas)
	return retry(ctx, r.wait, func(ctx context.Context) (jetstream.KeyValue, error) {
		return r.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
	})
}

func (r clustered) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = cmp.Or(cfg.Replicas, r.replicas)
	return retry(ctx, r.wait, func(ctx context.Context) (jetstream.KeyValue, error) {
		return r.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
	})
}

func (r clustered) CreateOrUpdateObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	cfg.Replicas = cmp.Or(cfg.Replicas, r.replicas)
	return retry(ctx, r.wait, func(ctx context.Context) (jetstream.ObjectStore, error) {
		return r.JetStream.CreateOrUpdateObjectStore(ctx, cfg)
	})
}

func (r clustered) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	return r.JetStream.Consumer(ctx, stream, r.durable(name))
}

func (r clustered) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return retry(ctx, r.wait, func(ctx context.Context) (jetstream.Consumer, error) {
		return r.JetStream.CreateConsumer(ctx, stream, r.consumer(cfg))
	})
}

func (r clustered) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return retry(ctx, r.wait, func(ctx context.Context) (jetstream.Consumer, error) {
		return r.JetStream.CreateOrUpdateConsumer(ctx, stream, r.consumer(cfg))
	})
}

func (r clustered) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return r.JetStream.UpdateConsumer(ctx, stream, r.consumer(cfg))
}

func (r clustered) DeleteConsumer(ctx context.Context, stream, name string) error {
	return r.JetStream.DeleteConsumer(ctx, stream, r.durable(name))
}

// waitQuorum waits until the cluster's JetStream answers: a meta leader
// is elected, which takes a majority of the nodes.
func (b *Bus) waitQuorum(ctx context.Context) error {
	within := b.clusterWait()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		// Each ask within a second or two: an ask before there is a leader
		// may get no answer at all.
		try, cancelTry := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.js.AccountInfo(try)
		cancelTry()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no quorum of the cluster's nodes within %s: start the other nodes (%v)", within, b.opts.Cluster.Routes)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// clusterWait is how long the node waits for the others at its start.
func (b *Bus) clusterWait() time.Duration {
	return cmp.Or(b.opts.Cluster.Wait, 2*time.Minute)
}

// Quorum reports whether the backbone can store messages: always alone;
// in a cluster, while its metadata has a leader, which takes a majority of
// the nodes (a node cut off from the others loses it within seconds).
func (b *Bus) Quorum() bool {
	if b.srv == nil {
		return false
	}
	if b.opts.Cluster == nil {
		return true
	}
	jsz, err := b.srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil || jsz.Meta.Leader == "" {
		return false
	}
	// A node cut off still names the leader it had until an election
	// times out (seconds; more when it was the leader itself); its routes
	// to the others end at once. Both are needed: routes to a majority of
	// the nodes, this one counted, and a leader.
	routed := map[string]bool{b.srv.Name(): true}
	rz, err := b.srv.Routez(&server.RoutezOptions{})
	if err != nil {
		return false
	}
	for _, r := range rz.Routes {
		routed[r.RemoteName] = true
	}
	size := max(jsz.Meta.Size, len(jsz.Meta.Replicas)+1)
	return 2*len(routed) > size
}

// Replicas is how many copies the bus keeps of its streams and buckets.
func (b *Bus) Replicas() int { return b.opts.Cluster.Replicas() }

// NodeInfo is a node of the cluster as this one sees it.
type NodeInfo struct {
	Name string `json:"name"`
	// Leader is the node that leads JetStream's metadata.
	Leader bool `json:"leader"`
	// Up: this node has a route to it (and, seen from the metadata's
	// leader, it is current).
	Up bool `json:"up"`
	// Self is this node.
	Self bool `json:"self"`
	// Active is how long ago this node last heard from it.
	Active time.Duration `json:"active_ns"`
	// Lag is how many metadata operations it is behind.
	Lag uint64 `json:"lag"`
}

// Nodes lists the cluster's nodes as this one sees them; a bus without a
// cluster is a node alone.
func (b *Bus) Nodes() []NodeInfo {
	if b.srv == nil {
		return nil
	}
	name := b.srv.Name()
	if b.opts.Cluster == nil {
		return []NodeInfo{{Name: name, Leader: true, Up: true, Self: true}}
	}
	jsz, err := b.srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		return []NodeInfo{{Name: name, Self: true, Up: true}}
	}
	m := jsz.Meta
	// A node is up when this one has a route to it: a follower of the
	// metadata does not learn whether the other followers are current.
	routed := map[string]bool{}
	if rz, err := b.srv.Routez(&server.RoutezOptions{}); err == nil {
		for _, r := range rz.Routes {
			routed[r.RemoteName] = true
		}
	}
	// The replicas are the peers other than this node, the leader among
	// them when it is another.
	out := []NodeInfo{{Name: name, Leader: m.Leader == name, Up: true, Self: true}}
	for _, p := range m.Replicas {
		if slices.ContainsFunc(out, func(n NodeInfo) bool { return n.Name == p.Name }) { // this node, or one listed twice
			continue
		}
		up := routed[p.Name] && !p.Offline
		if m.Leader == name {
			up = up && p.Current // the leader knows
		}
		out = append(out, NodeInfo{Name: p.Name, Leader: p.Name == m.Leader, Up: up, Active: p.Active, Lag: p.Lag})
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}
