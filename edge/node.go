package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Aliases 1..nodeAliases are the node's own metrics; devices' start after.
const (
	aliasBufferDropped = 1
	aliasBufferDepth   = 2
	aliasConfigVersion = 3
	aliasConfigError   = 4
	aliasUptime        = 5
	aliasCPU           = 6
	aliasMemory        = 7
	aliasDiskFree      = 8
	aliasBufferBytes   = 9
	aliasOldestUnsent  = 10
	aliasFiltered      = 11
	aliasReduction     = 12
	aliasReceiptDelay  = 13
	aliasBufferPercent = 14
	aliasBdSeq         = 15
	aliasVersion       = 16
	aliasRebirth       = 17
	aliasUpdateVersion = 18
	aliasUpdateStep    = 19
	aliasUpdatePercent = 20
	aliasUpdateError   = 21
	nodeAliases        = 24
	// templateAliases are the template definitions' in NBIRTH, far above
	// any device's.
	templateAliases = 1 << 40
	// connMetrics is how many node metrics describe each device's connection.
	connMetrics      = 7
	maxMetricsPerMsg = 500
	publishTimeout   = 10 * time.Second
)

// node is the Sparkplug B edge node of an Edge. One goroutine (run) owns it.
type node struct {
	// e is the edge whose devices the node speaks for: what the node reads
	// of them goes through Edge's methods, which take its lock; everything
	// else here is the node's own, touched by its run loop alone unless
	// atomic.
	e      *Edge
	opts   *Options // the edge's, fixed after New
	log    *slog.Logger
	bd     bdSeqStore
	client mqtt.Client
	bdSeq  uint64
	seq    uint64
	born   atomic.Bool
	// connected is set while a session is connected, with live its client,
	// for the updater's requests.
	connected atomic.Bool
	liveMu    sync.Mutex
	live      mqtt.Client

	lost    chan error
	cmds    chan cmd
	states  chan hostState
	hostOn  bool
	hostTS  uint64
	backoff time.Duration
	server  int // index into Options.Brokers

	// Store-and-forward state of the session (see forward.go).
	fw       *forwarder
	receipts chan sparkplug.Receipt
	configs  chan []byte // configurations from the cloud, newest kept
	msgs     uint64      // Sparkplug messages published in this session

	nodeDataAt time.Time
	// For the CPU share since the last node metrics.
	cpuAt   time.Time
	cpuUsed time.Duration
	// receiptDelay is how long the last receipt took after the message it
	// covers was sent (ns).
	receiptDelay atomic.Int64
	sentNode     map[uint64]string  // node metric alias -> what was last sent
	devBorn      map[*device]uint64 // 1 + the device's gen when its DBIRTH is the last word on the wire, else 0
	seqOf        map[uint64]uint64  // message number -> its seq, until receipted
}

// cmd is a received NCMD (device "") or DCMD.
type cmd struct {
	device string
	p      *pb.Payload
}

type hostState struct {
	Online    bool   `json:"online"`
	Timestamp uint64 `json:"timestamp"`
}

func newNode(e *Edge) (*node, error) {
	return &node{e: e, opts: &e.opts, log: e.log, bd: e.bdSeqFile(), lost: make(chan error, 1), cmds: make(chan cmd, 16),
		states: make(chan hostState, 16), receipts: make(chan sparkplug.Receipt, 64), configs: make(chan []byte, 1)}, nil
}

func (n *node) topic(t sparkplug.MsgType, device string) string {
	return sparkplug.Topic{Group: n.opts.Group, Type: t, Edge: n.opts.EdgeID, Device: device}.String()
}

// run connects, births and publishes until ctx is done, reconnecting with
// capped exponential backoff and jitter.
func (n *node) run(ctx context.Context) {
	log := n.e.log
	for ctx.Err() == nil {
		err := n.session(ctx)
		n.born.Store(false)
		if n.client != nil && n.client.IsConnected() {
			n.client.Disconnect(250)
		}
		if ctx.Err() != nil {
			return
		}
		n.server = (n.server + 1) % len(n.opts.Brokers)
		n.backoff = min(max(2*n.backoff, 500*time.Millisecond), 15*time.Second)
		wait := n.backoff/2 + rand.N(n.backoff/2+1)
		log.Warn("edge node offline, will reconnect", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session is one MQTT connection: connect, wait for the host, birth, publish.
func (n *node) session(ctx context.Context) error {
	o := n.e.opts
	// bdSeq counts CONNECT packets: one that never left (the dial or the
	// TLS handshake failed) spends none.
	bdSeq, err := n.bd.peek()
	if err != nil {
		return err
	}
	n.bdSeq = bdSeq
	will, err := proto.Marshal(n.deathPayload())
	if err != nil {
		return err
	}
	// Drain signals of an earlier session.
	for len(n.lost) > 0 {
		<-n.lost
	}
	n.hostOn, n.hostTS = o.PrimaryHost == "", 0
	broker := o.Brokers[n.server]
	co := mqtt.NewClientOptions().AddBroker(broker).SetClientID(o.Group+"."+o.EdgeID).
		SetUsername(o.Username).SetPassword(n.password()).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(o.KeepAlive).
		SetConnectTimeout(10*time.Second).SetWriteTimeout(publishTimeout).SetOrderMatters(false).
		SetBinaryWill(n.topic(sparkplug.NDEATH, ""), will, 1, false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case n.lost <- err:
			default:
			}
		})
	if o.TLS != nil {
		co.SetTLSConfig(o.TLS)
	}
	c := mqtt.NewClient(co)
	n.client = c
	err = wait(ctx, c.Connect())
	if err == nil || connectSent(err) {
		if serr := n.bd.spend(bdSeq); serr != nil {
			return serr
		}
	}
	if err != nil {
		return fmt.Errorf("connect %s: %w", broker, err)
	}
	onCmd := func(_ mqtt.Client, m mqtt.Message) {
		t, err := sparkplug.ParseTopic(m.Topic())
		if err != nil {
			return
		}
		p, err := sparkplug.Decode(m.Payload())
		if err != nil {
			n.log.Warn("malformed command rejected", "topic", m.Topic(), "err", err)
			return
		}
		select {
		case n.cmds <- cmd{device: t.Device, p: p}:
		default:
			n.log.Warn("command dropped: too many pending", "topic", m.Topic())
		}
	}
	// DCMD of every device, those a config adds later too.
	subs := map[string]byte{n.topic(sparkplug.NCMD, ""): 1, n.topic(sparkplug.DCMD, "+"): 1}
	if err := wait(ctx, c.SubscribeMultiple(subs, onCmd)); err != nil {
		return fmt.Errorf("subscribe commands: %w", err)
	}
	if o.PrimaryHost != "" {
		st := sparkplug.Topic{Type: sparkplug.STATE, HostID: o.PrimaryHost}.String()
		err := wait(ctx, c.Subscribe(st, 1, func(_ mqtt.Client, m mqtt.Message) {
			var s hostState
			if err := json.Unmarshal(m.Payload(), &s); err != nil {
				n.log.Warn("malformed STATE rejected", "topic", m.Topic(), "err", err)
				return
			}
			select {
			case n.states <- s:
			default:
			}
		}))
		if err != nil {
			return fmt.Errorf("subscribe STATE: %w", err)
		}
	}
	for len(n.receipts) > 0 {
		<-n.receipts
	}
	err = wait(ctx, c.Subscribe(sparkplug.ReceiptTopic(o.Group, o.EdgeID), 0, func(_ mqtt.Client, m mqtt.Message) {
		var r sparkplug.Receipt
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		select {
		case n.receipts <- r:
		default: // a later receipt covers this one
		}
	}))
	if err != nil {
		return fmt.Errorf("subscribe receipts: %w", err)
	}
	// The configuration the cloud keeps for this edge, retained; the last
	// one wins.
	err = wait(ctx, c.Subscribe(sparkplug.ConfigTopic(o.Group, o.EdgeID), 1, func(_ mqtt.Client, m mqtt.Message) {
		raw := append([]byte(nil), m.Payload()...)
		for {
			select {
			case n.configs <- raw:
				return
			default:
			}
			select {
			case <-n.configs: // an older one not applied yet
			default:
			}
		}
	}))
	if err != nil {
		return fmt.Errorf("subscribe config: %w", err)
	}
	// The release the cloud assigns this edge, retained, and the pieces of
	// its build.
	err = wait(ctx, c.SubscribeMultiple(map[string]byte{sparkplug.UpdateTopic(o.Group, o.EdgeID): 1, sparkplug.UpdateChunkTopic(o.Group, o.EdgeID): 1},
		func(_ mqtt.Client, m mqtt.Message) {
			if m.Topic() == sparkplug.UpdateTopic(o.Group, o.EdgeID) {
				n.e.upd.assign(m.Payload())
			} else {
				n.e.upd.chunk(m.Payload())
			}
		}))
	if err != nil {
		return fmt.Errorf("subscribe updates: %w", err)
	}
	n.liveMu.Lock()
	n.live = c
	n.liveMu.Unlock()
	n.connected.Store(true)
	defer func() {
		n.connected.Store(false)
		n.liveMu.Lock()
		n.live = nil
		n.liveMu.Unlock()
	}()
	n.msgs, n.seqOf = 0, map[uint64]uint64{}
	n.log.Info("edge node connected", "broker", broker, "bdSeq", bdSeq)
	defer n.publishDeath()
	// The next session starts its lanes anew from what is still buffered.
	defer func() { n.fw = nil }()

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if n.hostOn && !n.born.Load() {
			if err := n.birth(ctx); err != nil {
				return err
			}
			n.backoff = 0
			// Not Sparkplug, and after the birth certificates: the first
			// publish of a session is the NBIRTH.
			n.publishConfigStatus()
		}
		more := false
		if n.born.Load() {
			var err error
			if more, err = n.flush(ctx); err != nil {
				return err
			}
		}
		var hurry <-chan time.Time
		if more {
			hurry = time.After(time.Millisecond)
		}
		select {
		case r := <-n.receipts:
			if err := n.receipt(ctx, r); err != nil {
				return err
			}
		case <-hurry:
		case <-ctx.Done():
			return ctx.Err()
		case err := <-n.lost:
			return fmt.Errorf("connection lost: %w", err)
		case s := <-n.states:
			if s.Timestamp < n.hostTS {
				continue // an older STATE than one already seen
			}
			n.hostTS = s.Timestamp
			if s.Online {
				n.hostOn = true
				continue
			}
			if n.hostOn {
				return errors.New("primary host went offline")
			}
			if len(n.opts.Brokers) > 1 {
				// Offline here, as a cloud node cut off from its cluster says
				// on its broker: another server may have it online.
				return errors.New("primary host offline on this server")
			}
		case p := <-n.cmds:
			n.command(p)
		case raw := <-n.configs:
			n.e.applyRemote(raw)
			if n.born.Load() {
				n.publishConfigStatus()
			}
		case <-n.e.wake:
		case <-tick.C:
			if n.fw != nil {
				if err := n.fw.fallback(ctx); err != nil {
					return err
				}
			}
			if err := n.nodeData(); err != nil {
				return err
			}
		}
	}
}

// connectSent says whether a failed connect got as far as sending its
// CONNECT packet: not when the dial or the TLS handshake failed.
func connectSent(err error) bool {
	var op *net.OpError
	var rec tls.RecordHeaderError
	var cert *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &op) && op.Op == "dial", errors.As(err, &rec), errors.As(err, &cert),
		errors.As(err, &unknown), errors.As(err, &host), errors.Is(err, context.Canceled):
		return false
	}
	return true
}

func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(publishTimeout + 5*time.Second):
		return errors.New("timed out")
	}
}

func (n *node) publish(topic string, p *pb.Payload) error {
	b, err := proto.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode %s: %w", topic, err)
	}
	return n.publishBytes(topic, p.GetSeq(), b)
}

// publishBytes publishes an encoded payload whose sequence number is seq.
func (n *node) publishBytes(topic string, seq uint64, b []byte) error {
	n.msgs++
	n.seqOf[n.msgs] = seq
	t := n.client.Publish(topic, 0, false, b)
	if !t.WaitTimeout(publishTimeout) {
		return fmt.Errorf("publish %s: timed out", topic)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

func (n *node) nextSeq() *uint64 {
	s := n.seq
	n.seq = (n.seq + 1) % 256
	return proto.Uint64(s)
}

func (n *node) deathPayload() *pb.Payload {
	return sparkplug.NodeDeath(n.bdSeq, time.Now())
}

// publishConfigStatus reports, retained, the configuration the edge runs
// and what it refused. It is not Sparkplug and not counted for receipts.
func (n *node) publishConfigStatus() {
	b, err := json.Marshal(n.e.ConfigStatus())
	if err != nil || n.client == nil {
		return
	}
	t := n.client.Publish(sparkplug.ConfigStatusTopic(n.opts.Group, n.opts.EdgeID), 1, true, b)
	if !t.WaitTimeout(publishTimeout) || t.Error() != nil {
		n.log.Warn("config status not published", "err", t.Error())
	}
}

// request publishes an update request on the live connection (not
// Sparkplug, not counted for receipts); any goroutine may call it.
func (n *node) request(group, edge string, b []byte) error {
	n.liveMu.Lock()
	c := n.live
	n.liveMu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	t := c.Publish(sparkplug.UpdateGetTopic(group, edge), 0, false, b)
	if !t.WaitTimeout(publishTimeout) {
		return errors.New("update request: timed out")
	}
	return t.Error()
}

// publishDeath sends NDEATH before a clean disconnect, so the host does not
// wait for the keepalive to learn it.
func (n *node) publishDeath() {
	if n.client == nil || !n.client.IsConnected() {
		return
	}
	b, err := proto.Marshal(n.deathPayload())
	if err == nil {
		n.client.Publish(n.topic(sparkplug.NDEATH, ""), 1, false, b).WaitTimeout(2 * time.Second)
	}
	n.born.Store(false)
}

// password is the edge's broker password: the password file's as it is
// now, or the one given at the start.
func (n *node) password() string {
	if n.opts.PasswordFile == "" {
		return n.opts.Password
	}
	b, err := os.ReadFile(n.opts.PasswordFile)
	if err != nil {
		n.log.Warn("password file not read; using the password of the start", "file", n.opts.PasswordFile, "err", err)
		return n.opts.Password
	}
	return strings.TrimSpace(string(b))
}
