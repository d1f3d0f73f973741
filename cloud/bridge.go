package cloud

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MQTT across the nodes of a cluster: a message published on one node's
// broker reaches the matching subscribers of every node's broker, through
// the backbone. A message that is not retained goes on the core subject
// calx.mqtt.bridge; a retained one is kept in the replicated bucket
// CALX_RETAINED (one key per topic), which every node watches and which
// a node that starts loads whole, so that the retained messages are the
// same on every node, those sent while it was down included.
//
// Every message carries the node it came from: a client's publish is
// delivered by its own node's broker, and the others deliver it when it
// comes through the backbone; the cloud's own cluster-wide messages
// (commands, configurations, the host's STATE, alarms) carry no node and
// every node delivers them, its own included. Messages a node delivers
// from the backbone are published by its broker's inline client, which
// the bridge does not forward again: no loops.

const (
	subjectBridge  = "calx.mqtt.bridge"
	bucketRetained = "CALX_RETAINED"
)

// bridge joins a node's broker to the others'.
type bridge struct {
	node string
	nc   *nats.Conn
	kv   jetstream.KeyValue
	srv  *mqtt.Server
	log  *slog.Logger

	sub   *nats.Subscription
	watch jetstream.KeyWatcher
	done  chan struct{}

	// retained are the retained messages of the backbone as delivered,
	// by topic, to put them back after a loss of the quorum.
	mu       sync.Mutex
	retained map[string][]byte

	forwarded, delivered, failed atomic.Uint64
}

// envelope is a bridged message: QoS, the node it came from ("" for the
// cloud's own), the payload.
func envelope(qos byte, origin string, payload []byte) []byte {
	b := make([]byte, 0, 2+len(origin)+len(payload))
	b = append(b, qos, byte(len(origin)))
	b = append(b, origin...)
	return append(b, payload...)
}

func openEnvelope(b []byte) (qos byte, origin string, payload []byte, err error) {
	if len(b) < 2 || len(b) < 2+int(b[1]) || b[0] > 2 {
		return 0, "", nil, errors.New("bridged message: bad envelope")
	}
	n := int(b[1])
	return b[0], string(b[2 : 2+n]), b[2+n:], nil
}

// retainedKey is a topic's key in CALX_RETAINED: keys take fewer
// characters than topics.
func retainedKey(topic string) string { return base64.RawURLEncoding.EncodeToString([]byte(topic)) }

func newBridge(ctx context.Context, node string, nc *nats.Conn, js jetstream.JetStream, srv *mqtt.Server, log *slog.Logger) (*bridge, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketRetained, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("bridge: retained bucket: %w", err)
	}
	b := &bridge{node: node, nc: nc, kv: kv, srv: srv, log: log.With("component", "bridge"), done: make(chan struct{}), retained: map[string][]byte{}}
	if b.sub, err = nc.Subscribe(subjectBridge, b.onMessage); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if err := b.sub.SetPendingLimits(100000, 256<<20); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if b.watch, err = kv.WatchAll(ctx); err != nil {
		_ = b.sub.Unsubscribe()
		return nil, fmt.Errorf("bridge: watch retained: %w", err)
	}
	// The retained messages as they are now, before the broker takes
	// clients.
	for e := range b.watch.Updates() {
		if e == nil {
			break
		}
		b.onRetained(e, true)
	}
	go func() {
		defer close(b.done)
		for e := range b.watch.Updates() {
			if e != nil {
				b.onRetained(e, false)
			}
		}
	}()
	return b, nil
}

func (b *bridge) close() {
	if b == nil {
		return
	}
	_ = b.sub.Unsubscribe()
	_ = b.watch.Stop()
	<-b.done
	b.nc.Close()
}

// Publish sends one of the cloud's own messages to every node's broker.
func (b *bridge) Publish(topic string, payload []byte, retain bool, qos byte) error {
	return b.forward("", topic, payload, retain, qos)
}

func (b *bridge) forward(origin, topic string, payload []byte, retain bool, qos byte) error {
	env := envelope(qos, origin, payload)
	var err error
	if retain {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if len(payload) == 0 {
			// An empty retained message clears the topic's.
			err = b.kv.Delete(ctx, retainedKey(topic))
		} else {
			_, err = b.kv.Put(ctx, retainedKey(topic), env)
		}
	} else {
		err = b.nc.Publish(subjectBridge, append([]byte(topic+"\x00"), env...))
	}
	if err != nil {
		b.failed.Add(1)
		return fmt.Errorf("bridge %s: %w", topic, err)
	}
	b.forwarded.Add(1)
	return nil
}

func (b *bridge) onMessage(m *nats.Msg) {
	topic, env, ok := bytes.Cut(m.Data, []byte{0})
	if !ok {
		b.failed.Add(1)
		return
	}
	qos, origin, payload, err := openEnvelope(env)
	if err != nil {
		b.failed.Add(1)
		return
	}
	if origin == b.node {
		return // delivered here when it was published
	}
	b.deliver(string(topic), payload, false, qos)
}

// onRetained delivers a retained message of the bucket; at the start
// (initial) every one, later those of other nodes and the cloud's own.
func (b *bridge) onRetained(e jetstream.KeyValueEntry, initial bool) {
	raw, err := base64.RawURLEncoding.DecodeString(e.Key())
	if err != nil {
		b.failed.Add(1)
		return
	}
	topic := string(raw)
	if e.Operation() != jetstream.KeyValuePut {
		b.mu.Lock()
		delete(b.retained, topic)
		b.mu.Unlock()
		b.deliver(topic, nil, true, 0)
		return
	}
	qos, origin, payload, err := openEnvelope(e.Value())
	if err != nil {
		b.failed.Add(1)
		return
	}
	b.mu.Lock()
	b.retained[topic] = e.Value()
	b.mu.Unlock()
	if origin == b.node && !initial {
		return
	}
	b.deliver(topic, payload, true, qos)
}

func (b *bridge) deliver(topic string, payload []byte, retain bool, qos byte) {
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		b.failed.Add(1)
		b.log.Warn("bridged message not delivered", "topic", topic, "err", err)
		return
	}
	b.delivered.Add(1)
}

// restoreRetained delivers again the retained message of topic as the
// backbone has it (after the node told its clients otherwise).
func (b *bridge) restoreRetained(topic string) {
	b.mu.Lock()
	env, ok := b.retained[topic]
	b.mu.Unlock()
	if !ok {
		return
	}
	if qos, _, payload, err := openEnvelope(env); err == nil {
		b.deliver(topic, payload, true, qos)
	}
}

// lastRetained is the payload of topic's retained message in the
// backbone, nil for none.
func (b *bridge) lastRetained(topic string) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, _, payload, err := openEnvelope(b.retained[topic]); err == nil {
		return payload
	}
	return nil
}

// bridgeHook forwards what clients publish on this node to the others. It
// runs after the ingest hook, so a Sparkplug message is forwarded only once
// persisted (and without its retain flag); a retained message is in the
// backbone before the client's PUBACK.
type bridgeHook struct {
	mqtt.HookBase
	b *bridge
}

func (h *bridgeHook) ID() string { return "calx-bridge" }

func (h *bridgeHook) Provides(b byte) bool { return b == mqtt.OnPublish || b == mqtt.OnWillSent }

// OnWillSent forwards a client's Will (an edge's NDEATH, a retained
// status): the broker sends it without its publish hooks.
func (h *bridgeHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if err := h.b.forward(h.b.node, pk.TopicName, pk.Payload, pk.FixedHeader.Retain, pk.FixedHeader.Qos); err != nil {
		h.b.log.Warn("will not bridged to the other nodes", "topic", pk.TopicName, "err", err)
	}
}

func (h *bridgeHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if err := h.b.forward(h.b.node, pk.TopicName, pk.Payload, pk.FixedHeader.Retain, pk.FixedHeader.Qos); err != nil {
		if pk.FixedHeader.Retain {
			// Not kept cluster-wide: not taken.
			return pk, fmt.Errorf("%w: %w", err, packets.ErrRejectPacket)
		}
		h.b.log.Warn("publish not bridged to the other nodes", "topic", pk.TopicName, "err", err)
	}
	return pk, nil
}
