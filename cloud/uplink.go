package cloud

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// UplinkOptions make the cloud the Sparkplug primary host on a broker of
// the plant's own (HiveMQ, EMQX, Mosquitto, ...), as an MQTT client: it
// takes every edge node's births, data and deaths from there into the
// backbone (acknowledging each to the broker only once it is stored), and
// publishes there its STATE, its commands, the edges' configurations and,
// for Calx edges, their receipts. The embedded broker runs beside it for
// UNS readers and for edges that connect to the cloud itself.
type UplinkOptions struct {
	// URL of the broker: tcp://, mqtt://, ssl://, tls:// or mqtts://.
	URL      string
	Username string
	Password string
	// TLS for ssl://, tls:// and mqtts:// (nil: the system's roots).
	TLS *tls.Config
	// ClientID is the host's MQTT client id; default calx-host-<host id>.
	// Its session is kept by the broker while the cloud is away, so that
	// what edges sent meanwhile is delivered when it is back.
	ClientID string
}

// uplink is the host's connection to the plant's broker.
type uplink struct {
	opts   UplinkOptions
	url    string
	state  string // the host's STATE topic
	ingest *ingestHook
	local  *Broker // config status from edges is handed to it
	// connected is called after each connect, once STATE is online:
	// what must be on the broker again (the edges' configurations).
	connected func()
	log       *slog.Logger

	mu       sync.Mutex
	client   paho.Client
	sessions map[string]*uplinkSession // by group/edge

	up                                     atomic.Bool
	bornAt                                 time.Time // of the current connection's STATE, guarded by mu
	stored, dups, gaps, malformed, refused atomic.Uint64
	stop, done                             chan struct{}
	closeOnce                              sync.Once
}

// uplinkSession counts, for receipts, the messages of one edge node's
// session the backbone has stored, in seq order: a message delivered
// twice is counted once, one missing stops the count.
type uplinkSession struct {
	bdSeq, count, seq, receipted uint64
	birthTS                      uint64 // of its last NBIRTH
	broken                       bool
}

func newUplink(opts UplinkOptions, hostID string, ingest *ingestHook, local *Broker, log *slog.Logger) (*uplink, error) {
	url, err := config.BrokerURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	if opts.ClientID == "" {
		opts.ClientID = "calx-host-" + hostID
	}
	return &uplink{opts: opts, url: url, state: sparkplug.Topic{Type: sparkplug.STATE, HostID: hostID}.String(), ingest: ingest, local: local,
		log: log.With("component", "uplink", "broker", url), sessions: map[string]*uplinkSession{}, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

func stateJSON(online bool, ts time.Time) []byte {
	b, _ := json.Marshal(map[string]any{"online": online, "timestamp": sparkplug.Millis(ts)})
	return b
}

// start connects in the background and keeps the connection: each new
// connection sets a Will of STATE offline and publishes STATE online with
// the same timestamp, as Sparkplug 3.0 asks of a host. The loop owns the
// connection: it drops one that failed before making the next, and at
// stop says STATE offline and leaves.
func (u *uplink) start() {
	go func() {
		defer close(u.done)
		backoff := time.Duration(0)
		receipts := time.NewTicker(receiptInterval)
		defer receipts.Stop()
		for {
			lost := make(chan error, 1)
			conn := &uplinkConn{}
			c, err := u.connect(conn, lost)
			if err == nil {
				backoff = 0
			wait:
				for {
					select {
					case <-u.stop:
						u.leave(c)
						return
					case err = <-lost:
						break wait
					case <-receipts.C:
						u.receipts()
					}
				}
				// Nothing more is taken or acknowledged from this
				// connection: what it left unacknowledged comes again
				// on the next, in order.
				conn.failed.Store(true)
				u.up.Store(false)
				c.Disconnect(0)
			}
			u.up.Store(false)
			backoff = min(max(2*backoff, 250*time.Millisecond), 15*time.Second)
			u.log.Warn("primary host off the broker; reconnecting", "err", err, "retry_in", backoff)
			select {
			case <-u.stop:
				return
			case <-time.After(backoff):
			}
		}
	}()
}

// uplinkConn is one connection's state for its message handler.
type uplinkConn struct {
	failed atomic.Bool // a message could not be stored: take nothing more
}

func (u *uplink) connect(conn *uplinkConn, lost chan error) (paho.Client, error) {
	at := time.Now()
	o := paho.NewClientOptions().AddBroker(u.url).SetClientID(u.opts.ClientID).SetUsername(u.opts.Username).SetPassword(u.opts.Password).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(30*time.Second).
		SetConnectTimeout(10*time.Second).SetOrderMatters(true).SetAutoAckDisabled(true).
		SetBinaryWill(u.state, stateJSON(false, at), 1, true).
		// Set before the connect: a kept session's messages come right
		// after the CONNACK, before any SUBACK.
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { u.message(conn, m, lost) }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if u.opts.TLS != nil {
		o.SetTLSConfig(u.opts.TLS)
	}
	c := paho.NewClient(o)
	if err := waitToken(c.Connect(), 25*time.Second, "CONNACK"); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect: %w", err)
	}
	u.mu.Lock()
	u.client, u.bornAt = c, at
	u.mu.Unlock()
	subs := map[string]byte{sparkplug.Namespace + "/#": 1, sparkplug.ConfigStatusFilter: 1}
	if err := waitToken(c.SubscribeMultiple(subs, nil), 15*time.Second, "SUBACK"); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if err := waitToken(c.Publish(u.state, 1, true, stateJSON(true, at)), 15*time.Second, "PUBACK"); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("STATE: %w", err)
	}
	u.up.Store(true)
	u.log.Info("primary host online on the broker", "client_id", u.opts.ClientID)
	if u.connected != nil {
		u.connected()
	}
	return c, nil
}

func waitToken(t paho.Token, d time.Duration, what string) error {
	if !t.WaitTimeout(d) {
		return fmt.Errorf("no %s in %s", what, d)
	}
	return t.Error()
}

// leave says STATE offline, with the timestamp of this connection's
// online, and disconnects.
func (u *uplink) leave(c paho.Client) {
	u.mu.Lock()
	at := u.bornAt
	u.mu.Unlock()
	if u.up.Swap(false) {
		c.Publish(u.state, 1, true, stateJSON(false, at)).WaitTimeout(5 * time.Second)
	}
	c.Disconnect(250)
}

// message takes one message off the broker: a Sparkplug message is stored
// in the backbone before the broker gets its acknowledgement; one that
// cannot be stored is left unacknowledged, and so is everything after it
// on this connection, which the loop then drops, so that the broker
// delivers them again in order. (A QoS 0 message has no acknowledgement:
// one the backbone cannot take is lost, as QoS 0 allows.)
func (u *uplink) message(conn *uplinkConn, m paho.Message, lost chan error) {
	if conn.failed.Load() {
		return
	}
	topic := m.Topic()
	if strings.HasPrefix(topic, sparkplug.ConfigStatusPrefix) {
		if err := u.local.Publish(topic, m.Payload(), true, 1); err != nil {
			u.log.Warn("config status not taken", "topic", topic, "err", err)
		}
		m.Ack()
		return
	}
	t, err := sparkplug.ParseTopic(topic)
	if err != nil {
		u.malformed.Add(1)
		m.Ack()
		return
	}
	switch t.Type {
	case sparkplug.NBIRTH, sparkplug.NDEATH, sparkplug.NDATA, sparkplug.DBIRTH, sparkplug.DDEATH, sparkplug.DDATA:
	default:
		m.Ack() // STATE and commands are not plant data
		return
	}
	if m.Retained() {
		// Sparkplug forbids retained births, data and deaths: one is an old
		// message, not news.
		u.refused.Add(1)
		m.Ack()
		return
	}
	if err := u.ingest.persist(topic, m.Payload(), false); err != nil {
		conn.failed.Store(true)
		select {
		case lost <- fmt.Errorf("not stored: %w", err):
		default:
		}
		return
	}
	u.stored.Add(1)
	u.count(t, m.Payload())
	m.Ack()
}

// count advances the receipt count of the message's edge node session.
func (u *uplink) count(t sparkplug.Topic, payload []byte) {
	key := t.Group + "/" + t.Edge
	u.mu.Lock()
	defer u.mu.Unlock()
	if t.Type == sparkplug.NDEATH {
		return // not counted by the edge: it is its Will, or its last word
	}
	seq, hasSeq := sparkplug.PeekSeq(payload)
	if t.Type == sparkplug.NBIRTH {
		p, err := sparkplug.Decode(payload)
		if err != nil {
			return
		}
		bd, _ := metricUint(p, sparkplug.MetricBdSeq)
		if s, ok := u.sessions[key]; ok && s.bdSeq == bd && s.count > 0 {
			if p.GetTimestamp() == s.birthTS {
				u.dups.Add(1) // the same birth again
				return
			}
			// A rebirth within the session (asked for by the host): the
			// edge counts it as its next message, with seq 0.
			if !s.broken {
				s.count++
				s.seq, s.birthTS = seq, p.GetTimestamp()
			}
			return
		}
		u.sessions[key] = &uplinkSession{bdSeq: bd, count: 1, seq: seq, birthTS: p.GetTimestamp()}
		return
	}
	s, ok := u.sessions[key]
	if !ok || s.broken || !hasSeq {
		return
	}
	switch {
	case seq == (s.seq+1)%256:
		s.count++
		s.seq = seq
	case seq == s.seq || (s.seq+256-seq)%256 < 128:
		u.dups.Add(1) // delivered again
	default:
		u.gaps.Add(1)
		s.broken = true
	}
}

// receipts tells each Calx edge node what of its session is stored. A
// session with a gap gets a receipt that cannot match, which makes the
// edge start a new session and send again what has none.
func (u *uplink) receipts() {
	u.mu.Lock()
	type due struct {
		topic string
		r     sparkplug.Receipt
	}
	var out []due
	for key, s := range u.sessions {
		g, e, _ := strings.Cut(key, "/")
		switch {
		case s.broken && s.receipted != ^uint64(0):
			out = append(out, due{sparkplug.ReceiptTopic(g, e), sparkplug.Receipt{BdSeq: s.bdSeq, Count: s.count + 1, Seq: 256}})
			s.receipted = ^uint64(0)
		case !s.broken && s.count != s.receipted:
			out = append(out, due{sparkplug.ReceiptTopic(g, e), sparkplug.Receipt{BdSeq: s.bdSeq, Count: s.count, Seq: s.seq}})
			s.receipted = s.count
		}
	}
	c := u.client
	u.mu.Unlock()
	for _, d := range out {
		b, _ := json.Marshal(d.r)
		if c != nil {
			c.Publish(d.topic, 0, false, b)
		}
	}
}

// Publish sends a message of the host (STATE, a command, a configuration)
// on the broker.
func (u *uplink) Publish(topic string, payload []byte, retain bool, qos byte) error {
	u.mu.Lock()
	c := u.client
	u.mu.Unlock()
	if c == nil || !u.up.Load() {
		return errors.New("uplink: not connected to the broker")
	}
	t := c.Publish(topic, qos, retain, payload)
	if qos == 0 && !retain {
		return nil // a command: nothing to wait for, and the host's lock may be held
	}
	if !t.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("uplink: publish %s: no answer", topic)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("uplink: publish %s: %w", topic, err)
	}
	return nil
}

// close makes the loop say STATE offline and leave the broker, and waits
// for it; safe to call twice.
func (u *uplink) close() {
	u.closeOnce.Do(func() {
		close(u.stop)
		<-u.done
	})
}

// UplinkStats are the uplink's counters.
type UplinkStats struct {
	Connected  bool
	Stored     uint64 // Sparkplug messages taken into the backbone
	Duplicates uint64 // delivered again, stored again, not counted twice
	Gaps       uint64 // edge sessions whose messages came with a gap
	Malformed  uint64
	Refused    uint64 // retained births, data or deaths
}

func (u *uplink) stats() UplinkStats {
	return UplinkStats{Connected: u.up.Load(), Stored: u.stored.Load(), Duplicates: u.dups.Load(), Gaps: u.gaps.Load(),
		Malformed: u.malformed.Load(), Refused: u.refused.Load()}
}

// fanout publishes on the embedded broker and, when there is one, on the
// plant's broker; what only the plant's broker fails is logged.
type fanout struct {
	local Publisher
	up    *uplink
	log   *slog.Logger
}

func (f fanout) Publish(topic string, payload []byte, retain bool, qos byte) error {
	err := f.local.Publish(topic, payload, retain, qos)
	if f.up == nil || topic == f.up.state {
		return err // on the plant's broker the uplink says STATE itself, per connection
	}
	if !f.up.up.Load() {
		// STATE and the configurations go out again at the next connect.
		if !retain {
			f.log.Warn("not published: off the plant's broker", "topic", topic)
		}
		return err
	}
	if uerr := f.up.Publish(topic, payload, retain, qos); uerr != nil {
		f.log.Warn("not published on the plant's broker", "topic", topic, "err", uerr)
	}
	return err
}
