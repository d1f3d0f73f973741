package cloud

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// BrokerOptions configure the embedded MQTT broker.
type BrokerOptions struct {
	// Listen is the TCP address for MQTT clients.
	Listen string
	// TLS, when set, makes the listener MQTT over TLS.
	TLS   *tls.Config
	Users []MQTTUser
	// Limits bound connections, packets and sessions (guard.Limits).
	Limits guard.Limits
}

// Broker is the embedded mochi MQTT broker with Calx's auth, ACL and ingest.
type Broker struct {
	srv    *mqtt.Server
	auth   *authHook
	tcp    *guard.Listener
	limits *guard.Hook
	ingest *ingestHook
	gate   *retainGate
	log    *slog.Logger

	authDenied atomic.Uint64
	stop, done chan struct{} // the receipt loop
}

// BrokerStats are the broker's counters.
type BrokerStats struct {
	Clients     int64
	Received    int64
	Persisted   uint64
	PersistErrs uint64
	Malformed   uint64
	// RetainCleared counts Sparkplug messages sent retained, kept unretained.
	RetainCleared uint64
	Dropped       int64
	AuthDenied    uint64
	Listener      guard.Stats
	Limits        guard.HookStats
	Logins        guard.LoginStats
}

// validate checks the accounts and the limits.
func (opts BrokerOptions) validate() error {
	if opts.Listen == "" {
		return errors.New("mqtt.listen: an address is required")
	}
	for _, u := range opts.Users {
		if err := u.Validate(); err != nil {
			return err
		}
	}
	if err := opts.Limits.Validate(); err != nil {
		return fmt.Errorf("mqtt.%w", err)
	}
	return nil
}

func newBroker(opts BrokerOptions, js jetstream.JetStream, log *slog.Logger) (*Broker, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	opts.Limits.Apply(caps)
	// Retained messages stay until replaced: the host's STATE, which gates
	// every edge's births, and each tag's current UNS value would otherwise
	// be dropped a day after they were last published. Only the cloud's
	// own components and edges within their ACLs publish here.
	caps.MaximumMessageExpiryInterval = 0
	b := &Broker{log: log.With("component", "broker")}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: b.log})
	b.auth = newAuthHook(opts.Users, b.log, func() { b.authDenied.Add(1) })
	if err := srv.AddHook(b.auth, nil); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.ingest = &ingestHook{js: js, log: b.log.With("hook", "ingest")}
	if err := srv.AddHook(b.ingest, nil); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.gate = &retainGate{srv: srv, recheck: gateRecheck, maybe: true}
	if err := srv.AddHook(&retainGateHook{g: b.gate}, nil); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	// After the ingest hook, which clears the retain flag of Sparkplug
	// messages: the limits count only what is retained in the end.
	b.limits = guard.NewHook(srv, opts.Limits, b.log)
	if err := srv.AddHook(b.limits, nil); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	var err error
	b.tcp, err = guard.NewListener(guard.ListenerOptions{ID: "mqtt", Address: opts.Listen, TLS: opts.TLS, Limits: opts.Limits, Logger: b.log})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if err := srv.AddListener(b.tcp); err != nil {
		return nil, fmt.Errorf("broker: listen %s: %w", opts.Listen, err)
	}
	b.srv = srv
	return b, nil
}

func (b *Broker) start() error {
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	b.stop = make(chan struct{})
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		t := time.NewTicker(receiptInterval)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.ingest.receipts(func(topic string, payload []byte) error { return b.srv.Publish(topic, payload, false, 0) })
			}
		}
	}()
	return nil
}

// receiptInterval is how often edge nodes hear what is persisted.
const receiptInterval = 200 * time.Millisecond

// Err says why the MQTT listener cannot take clients now; nil when it can.
func (b *Broker) Err() error { return b.tcp.Err() }

// Addr is the address the MQTT listener is bound to.
func (b *Broker) Addr() string { return b.tcp.Address() }

// Publish sends a message from inside the process (host STATE, commands).
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	return b.srv.Publish(topic, payload, retain, qos)
}

// PublishRetained keeps payload as the retained message of topic, a topic
// under uns/, and publishes it to subscribers if any may follow it
// (retaingate.go).
func (b *Broker) PublishRetained(topic string, payload []byte) error {
	return b.gate.publish(topic, payload)
}

// Stats returns the broker's counters.
func (b *Broker) Stats() BrokerStats {
	return BrokerStats{
		Clients:       atomic.LoadInt64(&b.srv.Info.ClientsConnected),
		Received:      atomic.LoadInt64(&b.srv.Info.MessagesReceived),
		Persisted:     b.ingest.persisted.Load(),
		PersistErrs:   b.ingest.failed.Load(),
		Malformed:     b.ingest.malformed.Load(),
		RetainCleared: b.ingest.retainCleared.Load(),
		Dropped:       atomic.LoadInt64(&b.srv.Info.MessagesDropped),
		AuthDenied:    b.authDenied.Load(),
		Listener:      b.tcp.Stats(),
		Limits:        b.limits.Stats(),
		Logins:        b.auth.logins.Stats(),
	}
}

// Disconnect drops a client's connection as if its network failed, so
// that the broker publishes its Will.
func (b *Broker) Disconnect(clientID string) error {
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok {
		return fmt.Errorf("broker: no client %q", clientID)
	}
	// Only the connection is closed: the client's read then fails, and the
	// broker ends the session as a network failure, Will included. Stopping
	// the client instead can end its read as a clean disconnect, Will dropped.
	if cl.Net.Conn == nil {
		return fmt.Errorf("broker: client %q has no network connection", clientID)
	}
	if err := cl.Net.Conn.Close(); err != nil {
		return fmt.Errorf("broker: disconnect %q: %w", clientID, err)
	}
	return nil
}

func (b *Broker) close() error {
	if b.stop != nil {
		close(b.stop)
		<-b.done
		b.stop = nil
	}
	return b.srv.Close()
}

// ingestHook persists every Sparkplug message an edge sends into the
// backbone before the broker acknowledges it or anything else sees it. A
// message that cannot be persisted is not acknowledged.
type ingestHook struct {
	mqtt.HookBase
	js  jetstream.JetStream
	log *slog.Logger

	persisted, failed, malformed, retainCleared atomic.Uint64

	// sessions of edge nodes, by client id, for their receipts; smu
	// orders the sessions' starts.
	sessions sync.Map
	smu      sync.Mutex
}

// edgeSession counts what one edge node's MQTT session has had persisted.
type edgeSession struct {
	cl          *mqtt.Client // the connection counted: a client id outlives it
	group, edge string
	bdSeq       uint64
	mu          sync.Mutex
	count, seq  uint64
	receipted   uint64
}

func (h *ingestHook) ID() string { return "calx-ingest" }

func (h *ingestHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish, mqtt.OnWill, mqtt.OnWillSent, mqtt.OnSessionEstablished, mqtt.OnDisconnect}, []byte{b})
}

// OnSessionEstablished starts counting the messages of an edge node's
// session; its Will (NDEATH) names the node and the session's bdSeq.
//
// mochi calls it after the CONNACK, so a connection's call can come after
// a newer connection under the same client id took the session over and
// started its own count: a connection taken over or closed starts none.
// The takeover marks the old connection before the new one's call, and
// smu keeps each check and its start together.
func (h *ingestHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.smu.Lock()
	defer h.smu.Unlock()
	if cl.IsTakenOver() || cl.Closed() {
		return
	}
	h.sessions.Delete(cl.ID)
	if !pk.Connect.WillFlag {
		return
	}
	t, err := sparkplug.ParseTopic(pk.Connect.WillTopic)
	if err != nil || t.Type != sparkplug.NDEATH {
		return
	}
	p, err := sparkplug.Decode(pk.Connect.WillPayload)
	if err != nil {
		return
	}
	bd, _ := metricUint(p, sparkplug.MetricBdSeq)
	h.sessions.Store(cl.ID, &edgeSession{cl: cl, group: t.Group, edge: t.Edge, bdSeq: bd})
}

// session is the counted session of this connection. A reconnect under the
// same client id can overlap the old connection's last publishes and its
// disconnect: those belong to the old count, not the new one.
func (h *ingestHook) session(cl *mqtt.Client) (*edgeSession, bool) {
	v, ok := h.sessions.Load(cl.ID)
	if !ok || v.(*edgeSession).cl != cl {
		return nil, false
	}
	return v.(*edgeSession), true
}

func (h *ingestHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if s, ok := h.session(cl); ok {
		h.sessions.CompareAndDelete(cl.ID, s)
	}
}

// receipts publishes, for each edge session with news, how many of its
// messages are persisted.
func (h *ingestHook) receipts(pub func(topic string, payload []byte) error) {
	h.sessions.Range(func(_, v any) bool {
		s := v.(*edgeSession)
		s.mu.Lock()
		r := sparkplug.Receipt{BdSeq: s.bdSeq, Count: s.count, Seq: s.seq}
		due := s.count != s.receipted
		s.receipted = s.count
		s.mu.Unlock()
		if due {
			b, _ := json.Marshal(r)
			if err := pub(sparkplug.ReceiptTopic(s.group, s.edge), b); err != nil {
				h.log.Warn("receipt not sent", "edge", s.group+"/"+s.edge, "err", err)
			}
		}
		return true
	})
}

// errNotPersisted makes mochi drop a publish without acknowledging it.
var errNotPersisted = fmt.Errorf("not persisted: %w", packets.ErrRejectPacket)

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, sparkplug.Namespace+"/") {
		return pk, nil
	}
	err := h.persist(pk.TopicName, pk.Payload, false)
	if errors.Is(err, sparkplug.ErrBadTopic) {
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Retain {
		// Sparkplug forbids retained births, deaths and data: a retained
		// one would be delivered to every later subscriber as new.
		pk.FixedHeader.Retain = false
		if h.retainCleared.Add(1)%1000 == 1 {
			h.log.Warn("retain flag cleared on a Sparkplug message", "client", cl.ID, "topic", pk.TopicName)
		}
	}
	s, counted := h.session(cl)
	if err != nil {
		if counted {
			// The session's count can no longer match what the edge sent:
			// end the session, so that the edge sends again what has no receipt.
			h.sessions.CompareAndDelete(cl.ID, s)
			cl.Stop(fmt.Errorf("ingest: %w", err))
		}
		return pk, errNotPersisted
	}
	if counted {
		seq, _ := sparkplug.PeekSeq(pk.Payload)
		s.mu.Lock()
		s.count++
		s.seq = seq
		s.mu.Unlock()
	}
	return pk, nil
}

// OnWill keeps an edge's NDEATH unretained, as its other messages.
func (h *ingestHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain && strings.HasPrefix(will.TopicName, sparkplug.Namespace+"/") {
		will.Retain = false
		h.retainCleared.Add(1)
	}
	return will, nil
}

// OnWillSent persists an edge's NDEATH sent by the broker on its behalf.
func (h *ingestHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if strings.HasPrefix(pk.TopicName, sparkplug.Namespace+"/") {
		_ = h.persist(pk.TopicName, pk.Payload, true)
	}
}

// HeaderWill marks, in the backbone, an NDEATH the broker sent as the
// edge's Will: the connection was lost, the edge did not stop cleanly.
const HeaderWill = "Calx-Will"

func (h *ingestHook) persist(topic string, payload []byte, will bool) error {
	t, err := sparkplug.ParseTopic(topic)
	if err != nil {
		h.malformed.Add(1)
		h.log.Warn("publish rejected", "topic", topic, "err", err)
		return err
	}
	switch t.Type {
	case sparkplug.NBIRTH, sparkplug.NDEATH, sparkplug.NDATA, sparkplug.DBIRTH, sparkplug.DDEATH, sparkplug.DDATA:
	default:
		return nil // commands and STATE are not plant data
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg := &nats.Msg{Subject: SparkplugSubject(t), Data: payload}
	if will {
		msg.Header = nats.Header{HeaderWill: []string{"1"}}
	}
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		h.failed.Add(1)
		h.log.Error("persist failed", "topic", topic, "err", err)
		return err
	}
	h.persisted.Add(1)
	return nil
}

// SparkplugSubject is the backbone subject of a Sparkplug topic:
// calx.spb.<group>.<edge>.<TYPE>[.<device>], ids escaped.
func SparkplugSubject(t sparkplug.Topic) string {
	s := store.SubjectSparkplug + "." + store.Token(t.Group) + "." + store.Token(t.Edge) + "." + string(t.Type)
	if t.Device != "" {
		s += "." + store.Token(t.Device)
	}
	return s
}

// ParseSparkplugSubject is the inverse of SparkplugSubject.
func ParseSparkplugSubject(subj string) (sparkplug.Topic, error) {
	parts := strings.Split(subj, ".")
	if len(parts) < 5 || len(parts) > 6 || parts[0]+"."+parts[1] != store.SubjectSparkplug {
		return sparkplug.Topic{}, fmt.Errorf("%w: subject %q", sparkplug.ErrBadTopic, subj)
	}
	t := sparkplug.Topic{Group: store.Untoken(parts[2]), Edge: store.Untoken(parts[3]), Type: sparkplug.MsgType(parts[4])}
	if len(parts) == 6 {
		t.Device = store.Untoken(parts[5])
	}
	return sparkplug.ParseTopic(t.String())
}
