package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
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
	e      *Edge
	bd     bdSeqStore
	client mqtt.Client
	bdSeq  uint64
	seq    uint64
	born   atomic.Bool

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
	return &node{e: e, bd: e.bdSeqFile(), lost: make(chan error, 1), cmds: make(chan cmd, 16),
		states: make(chan hostState, 16), receipts: make(chan sparkplug.Receipt, 64), configs: make(chan []byte, 1)}, nil
}

func (n *node) topic(t sparkplug.MsgType, device string) string {
	return sparkplug.Topic{Group: n.e.opts.Group, Type: t, Edge: n.e.opts.EdgeID, Device: device}.String()
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
		n.server = (n.server + 1) % len(n.e.opts.Brokers)
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
		SetUsername(o.Username).SetPassword(o.Password).SetCleanSession(true).
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
			n.e.log.Warn("malformed command rejected", "topic", m.Topic(), "err", err)
			return
		}
		select {
		case n.cmds <- cmd{device: t.Device, p: p}:
		default:
			n.e.log.Warn("command dropped: too many pending", "topic", m.Topic())
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
				n.e.log.Warn("malformed STATE rejected", "topic", m.Topic(), "err", err)
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
	n.msgs, n.seqOf = 0, map[uint64]uint64{}
	n.e.log.Info("edge node connected", "broker", broker, "bdSeq", bdSeq)
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
	n.msgs++
	n.seqOf[n.msgs] = p.GetSeq()
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
	return &pb.Payload{Timestamp: proto.Uint64(sparkplug.Millis(time.Now())), Metrics: []*pb.Payload_Metric{{
		Name: proto.String(sparkplug.MetricBdSeq), Datatype: proto.Uint32(uint32(pb.DataType_Int64)),
		Value: &pb.Payload_Metric_LongValue{LongValue: n.bdSeq},
	}}}
}

// publishConfigStatus reports, retained, the configuration the edge runs
// and what it refused. It is not Sparkplug and not counted for receipts.
func (n *node) publishConfigStatus() {
	b, err := json.Marshal(n.e.ConfigStatus())
	if err != nil || n.client == nil {
		return
	}
	t := n.client.Publish(sparkplug.ConfigStatusTopic(n.e.opts.Group, n.e.opts.EdgeID), 1, true, b)
	if !t.WaitTimeout(publishTimeout) || t.Error() != nil {
		n.e.log.Warn("config status not published", "err", t.Error())
	}
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

// birth publishes NBIRTH with seq 0 and a DBIRTH for every device. Values
// still queued from before are older than the birth and go as historical.
func (n *node) birth(ctx context.Context) error {
	now := time.Now()
	ms := sparkplug.Millis(now)
	n.seq = 0
	i64 := uint32(pb.DataType_Int64)
	nb := &pb.Payload{Timestamp: proto.Uint64(ms), Seq: n.nextSeq(), Metrics: []*pb.Payload_Metric{
		{Name: proto.String(sparkplug.MetricBdSeq), Alias: proto.Uint64(aliasBdSeq), Timestamp: proto.Uint64(ms), Datatype: proto.Uint32(i64),
			Value: &pb.Payload_Metric_LongValue{LongValue: n.bdSeq}},
		{Name: proto.String(sparkplug.MetricRebirth), Alias: proto.Uint64(aliasRebirth), Timestamp: proto.Uint64(ms), Datatype: proto.Uint32(uint32(pb.DataType_Boolean)),
			Value: &pb.Payload_Metric_BooleanValue{BooleanValue: false}},
		{Name: proto.String(sparkplug.MetricCalxVersion), Alias: proto.Uint64(aliasVersion), Timestamp: proto.Uint64(ms), Datatype: proto.Uint32(uint32(pb.DataType_String)),
			Value: &pb.Payload_Metric_StringValue{StringValue: n.e.opts.Version}},
	}}
	n.sentNode = map[uint64]string{}
	for _, m := range n.nodeMetrics(ms) {
		n.sentNode[m.GetAlias()] = metricKey(m)
		m.Name = proto.String(n.nodeMetricName(m.GetAlias()))
		m.Datatype = proto.Uint32(uint32(nodeMetricType(m)))
		nb.Metrics = append(nb.Metrics, m)
	}
	if n.e.opts.SparkplugTemplates {
		nb.Metrics = append(nb.Metrics, n.templateDefinitions(ms)...)
	}
	if err := n.publish(n.topic(sparkplug.NBIRTH, ""), nb); err != nil {
		return err
	}
	n.devBorn = map[*device]uint64{}
	devices := n.e.deviceList()
	for _, d := range devices {
		n.e.mu.Lock()
		lost := d.lost
		n.e.mu.Unlock()
		if lost {
			continue // born again when it comes back
		}
		if err := n.birthDevice(d, ms); err != nil {
			return err
		}
	}
	n.born.Store(true)
	// Device events from before this birth are answered by it.
	n.e.mu.Lock()
	n.e.events = n.e.events[:0]
	n.e.mu.Unlock()
	if n.fw == nil {
		fw, err := newForwarder(ctx, n)
		if err != nil {
			return err
		}
		n.fw = fw
	}
	n.e.log.Info("edge node born", "bdSeq", n.bdSeq, "devices", len(devices), "backlog_msgs", n.fw.backlogMsgs())
	return nil
}

// birthDevice publishes a DBIRTH of d with every metric it has now.
func (n *node) birthDevice(d *device, ms uint64) error {
	p, gen := n.deviceBirth(d, ms)
	if err := n.publish(n.topic(sparkplug.DBIRTH, d.ID), p); err != nil {
		return err
	}
	n.devBorn[d] = gen + 1
	return nil
}

// isBorn reports whether d's last word on the wire is a DBIRTH with all
// of its metrics.
func (n *node) isBorn(d *device) bool {
	n.e.mu.Lock()
	defer n.e.mu.Unlock()
	return n.devBorn[d] == d.gen+1
}

func (n *node) deviceBirth(d *device, ms uint64) (*pb.Payload, uint64) {
	p := &pb.Payload{Timestamp: proto.Uint64(ms), Seq: n.nextSeq()}
	n.e.mu.Lock()
	defer n.e.mu.Unlock()
	for _, m := range d.metrics {
		wt := sparkplug.WireType(m.def.DataType)
		pm := &pb.Payload_Metric{
			Name:     proto.String(m.def.Name),
			Alias:    proto.Uint64(m.alias),
			Datatype: proto.Uint32(uint32(wt)),
		}
		q := uns.Bad
		if m.hasCur {
			pm.Timestamp = proto.Uint64(sparkplug.Millis(m.current.TS))
			sparkplug.SetValue(pm, wt, m.current.Value)
			q = m.current.Quality
		} else {
			pm.Timestamp = proto.Uint64(ms)
			pm.IsNull = proto.Bool(true)
		}
		kv := []any{sparkplug.PropUNSPath, string(m.path), sparkplug.PropQuality, int32(sparkplug.QualityCode(q))}
		if m.def.Unit != "" {
			kv = append(kv, sparkplug.PropEngUnit, m.def.Unit)
		}
		if m.def.High > m.def.Low {
			kv = append(kv, sparkplug.PropEngLow, m.def.Low, sparkplug.PropEngHigh, m.def.High)
		}
		if m.def.AlarmLow != nil {
			kv = append(kv, sparkplug.PropAlarmLow, *m.def.AlarmLow)
		}
		if m.def.AlarmHigh != nil {
			kv = append(kv, sparkplug.PropAlarmHigh, *m.def.AlarmHigh)
		}
		if m.def.Description != "" {
			kv = append(kv, "description", m.def.Description)
		}
		kv = append(kv, sparkplug.PropWritable, !m.def.Writable)
		if m.def.Writable && m.def.WriteMin != nil {
			kv = append(kv, sparkplug.PropWriteMin, *m.def.WriteMin)
		}
		if m.def.Writable && m.def.WriteMax != nil {
			kv = append(kv, sparkplug.PropWriteMax, *m.def.WriteMax)
		}
		pm.Properties = sparkplug.Properties(kv...)
		p.Metrics = append(p.Metrics, pm)
	}
	sparkplug.SortByTime(p.Metrics)
	if n.e.opts.SparkplugTemplates {
		// One template instance: the metrics become its members, by name.
		for _, pm := range p.Metrics {
			pm.Alias = nil
		}
		name := d.templateName()
		p.Metrics = []*pb.Payload_Metric{{Name: proto.String(name), Alias: proto.Uint64(d.instAlias), Timestamp: proto.Uint64(ms),
			Datatype: proto.Uint32(uint32(pb.DataType_Template)), Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{
				TemplateRef: proto.String(name), IsDefinition: proto.Bool(false), Metrics: p.Metrics}}}}
	}
	return p, d.gen
}

// templateName is the device's machine type: its template, or its id.
func (d *device) templateName() string {
	if d.Template != "" {
		return d.Template
	}
	return d.ID
}

// templateDefinitions returns one Template definition per machine type of
// the devices, its members the metrics of the first device of that type.
func (n *node) templateDefinitions(ms uint64) []*pb.Payload_Metric {
	n.e.mu.Lock()
	defer n.e.mu.Unlock()
	var out []*pb.Payload_Metric
	seen := map[string]bool{}
	for _, d := range n.e.devices {
		name := d.templateName()
		if d.retired || seen[name] {
			continue
		}
		seen[name] = true
		var members []*pb.Payload_Metric
		for _, m := range d.metrics {
			pm := &pb.Payload_Metric{Name: proto.String(m.def.Name), Timestamp: proto.Uint64(ms),
				Datatype: proto.Uint32(uint32(sparkplug.WireType(m.def.DataType))), IsNull: proto.Bool(true)}
			if m.def.Unit != "" {
				pm.Properties = sparkplug.Properties(sparkplug.PropEngUnit, m.def.Unit)
			}
			members = append(members, pm)
		}
		out = append(out, &pb.Payload_Metric{Name: proto.String(name), Alias: proto.Uint64(templateAliases + uint64(len(out))), Timestamp: proto.Uint64(ms),
			Datatype: proto.Uint32(uint32(pb.DataType_Template)),
			Value:    &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{IsDefinition: proto.Bool(true), Metrics: members}}})
	}
	return out
}

// nodeMetrics returns the node's own figures by alias, without names:
// the buffer, and each device's connection.
func (n *node) nodeMetrics(ms uint64) []*pb.Payload_Metric {
	st := n.e.Stats()
	long := func(alias, v uint64) *pb.Payload_Metric {
		return &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_LongValue{LongValue: v}}
	}
	double := func(alias uint64, v float64) *pb.Payload_Metric {
		return &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_DoubleValue{DoubleValue: math.Round(v*100) / 100}}
	}
	cfg := n.e.ConfigStatus()
	out := []*pb.Payload_Metric{long(aliasBufferDropped, st.Dropped), long(aliasBufferDepth, st.BufferedMsgs),
		long(aliasConfigVersion, cfg.Applied),
		{Alias: proto.Uint64(aliasConfigError), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_StringValue{StringValue: cfg.Error}},
		long(aliasUptime, uint64(time.Since(n.e.started).Seconds())),
		double(aliasCPU, n.cpuPercent()), double(aliasMemory, memoryMiB()),
		long(aliasBufferBytes, st.BufferedBytes), double(aliasOldestUnsent, st.OldestUnconfirmed.Seconds()),
		long(aliasFiltered, st.Filtered), double(aliasReceiptDelay, float64(n.receiptDelay.Load())/float64(time.Millisecond)),
		double(aliasBufferPercent, 100*float64(st.BufferedBytes)/float64(n.e.opts.BufferMaxBytes))}
	if st.Read > 0 {
		out = append(out, double(aliasReduction, 100*float64(st.Filtered)/float64(st.Read)))
	} else {
		out = append(out, double(aliasReduction, 0))
	}
	if free, ok := diskFree(n.e.opts.DataDir); ok {
		out = append(out, double(aliasDiskFree, float64(free)/(1<<20)))
	}
	for _, cs := range n.e.Connections() {
		a := cs.alias
		out = append(out,
			&pb.Payload_Metric{Alias: proto.Uint64(a), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_BooleanValue{BooleanValue: cs.Connected}},
			&pb.Payload_Metric{Alias: proto.Uint64(a + 1), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_StringValue{StringValue: cs.LastError}},
			long(a+2, cs.Reads), long(a+3, cs.Errors),
			double(a+4, float64(cs.Latency)/float64(time.Millisecond)), double(a+5, cs.ReadsPerSec), double(a+6, cs.ErrorsPerSec))
	}
	return out
}

// nodeMetricName names a node metric by its alias.
func (n *node) nodeMetricName(alias uint64) string {
	switch alias {
	case aliasBufferDropped:
		return "Buffer/Dropped"
	case aliasBufferDepth:
		return "Buffer/Messages"
	case aliasConfigVersion:
		return "Config/Version"
	case aliasConfigError:
		return "Config/Error"
	case aliasUptime:
		return "Health/UptimeSeconds"
	case aliasCPU:
		return "Health/CPUPercent"
	case aliasMemory:
		return "Health/MemoryMiB"
	case aliasDiskFree:
		return "Health/DiskFreeMiB"
	case aliasBufferBytes:
		return "Buffer/Bytes"
	case aliasOldestUnsent:
		return "Buffer/OldestUnsentSeconds"
	case aliasFiltered:
		return "Values/Filtered"
	case aliasReduction:
		return "Values/ReductionPercent"
	case aliasReceiptDelay:
		return "Receipt/DelayMs"
	case aliasBufferPercent:
		return "Buffer/FullPercent"
	}
	for _, d := range n.e.deviceList() {
		if alias >= d.connAlias && alias < d.connAlias+connMetrics {
			return "Connections/" + d.ID + "/" + [...]string{"Connected", "LastError", "Reads", "Errors", "LatencyMs", "ReadsPerSec", "ErrorsPerSec"}[alias-d.connAlias]
		}
	}
	return fmt.Sprintf("Metric%d", alias)
}

// metricKey tells whether a node metric's value changed.
func metricKey(m *pb.Payload_Metric) string {
	key := proto.Clone(m).(*pb.Payload_Metric)
	key.Timestamp = nil
	return key.String()
}

func nodeMetricType(m *pb.Payload_Metric) pb.DataType {
	switch m.Value.(type) {
	case *pb.Payload_Metric_BooleanValue:
		return pb.DataType_Boolean
	case *pb.Payload_Metric_StringValue:
		return pb.DataType_String
	case *pb.Payload_Metric_DoubleValue:
		return pb.DataType_Double
	}
	return pb.DataType_Int64
}

// nodeData publishes, at most every 5 s, the node metrics that changed
// since they were last sent.
func (n *node) nodeData() error {
	if !n.born.Load() || time.Since(n.nodeDataAt) < 5*time.Second {
		return nil
	}
	n.nodeDataAt = time.Now()
	ms := sparkplug.Millis(time.Now())
	p := &pb.Payload{Timestamp: proto.Uint64(ms)}
	for _, m := range n.nodeMetrics(ms) {
		if k := metricKey(m); n.sentNode[m.GetAlias()] != k {
			n.sentNode[m.GetAlias()] = k
			p.Metrics = append(p.Metrics, m)
		}
	}
	if len(p.Metrics) == 0 {
		return nil
	}
	p.Seq = n.nextSeq()
	return n.publish(n.topic(sparkplug.NDATA, ""), p)
}

// event publishes a device's death or its birth after it came back. The
// connection metrics follow at the next tick rather than in up to 5 s.
func (n *node) event(q event) error {
	n.nodeDataAt = time.Time{}
	switch q.ev {
	case evDeath:
		return n.deviceDeath(q.dev, q.at)
	case evBirth:
		return n.birthDevice(q.dev, sparkplug.Millis(time.Now()))
	}
	return nil
}

func (n *node) deviceDeath(d *device, at time.Time) error {
	p := &pb.Payload{Timestamp: proto.Uint64(sparkplug.Millis(at)), Seq: n.nextSeq()}
	if err := n.publish(n.topic(sparkplug.DDEATH, d.ID), p); err != nil {
		return err
	}
	n.devBorn[d] = 0
	return nil
}

// events publishes the queued device deaths and births.
func (n *node) events() error {
	n.e.mu.Lock()
	evs := append([]event(nil), n.e.events...)
	n.e.events = n.e.events[:0]
	n.e.mu.Unlock()
	for _, ev := range evs {
		if err := n.event(ev); err != nil {
			return err
		}
	}
	return nil
}

// command handles an NCMD or DCMD payload.
func (n *node) command(c cmd) {
	if c.device == "" {
		for _, m := range c.p.GetMetrics() {
			// By name, or by the alias of the birth alone, as a host
			// that follows payloads-alias-data-cmd-requirement sends it.
			rebirth := m.GetName() == sparkplug.MetricRebirth || m.Name == nil && m.GetAlias() == aliasRebirth
			if rebirth && m.GetBooleanValue() {
				n.e.log.Info("rebirth requested")
				n.born.Store(false)
				return
			}
		}
		n.e.log.Warn("node command refused: only Node Control/Rebirth is supported", "metrics", len(c.p.GetMetrics()))
		return
	}
	var dev *device
	for _, d := range n.e.deviceList() {
		if d.ID == c.device && !d.retired {
			dev = d
		}
	}
	if dev == nil {
		n.e.log.Warn("command for an unknown device refused", "device", c.device)
		return
	}
	n.e.mu.Lock()
	w, canWrite := dev.Connector.(Writer)
	n.e.mu.Unlock()
	// A write to the device's template instance carries its members.
	var metrics []*pb.Payload_Metric
	for _, pm := range c.p.GetMetrics() {
		if tv := pm.GetTemplateValue(); tv != nil && !tv.GetIsDefinition() {
			metrics = append(metrics, tv.GetMetrics()...)
			continue
		}
		metrics = append(metrics, pm)
	}
	for _, pm := range metrics {
		var m *metric
		n.e.mu.Lock()
		if pm.Name != nil {
			// A member of the device's template instance, as "<instance>/<member>".
			name := pm.GetName()
			if n.e.opts.SparkplugTemplates {
				name = strings.TrimPrefix(name, dev.templateName()+"/")
			}
			m = dev.byName[name]
		} else {
			m = dev.byAlias[pm.GetAlias()]
		}
		n.e.mu.Unlock()
		switch {
		case m == nil:
			n.e.log.Warn("write to an unknown metric refused", "device", dev.ID, "metric", pm.GetName(), "alias", pm.GetAlias())
			continue
		case !m.def.Writable || !canWrite:
			n.e.log.Warn("write to a read-only metric refused", "device", dev.ID, "metric", m.def.Name)
			continue
		}
		v, err := sparkplug.GetValue(pm, sparkplug.WireType(m.def.DataType))
		if err != nil {
			n.e.log.Warn("write refused: bad value", "device", dev.ID, "metric", m.def.Name, "err", err)
			continue
		}
		if err := (uns.Tag{DataType: m.def.DataType, Unit: m.def.Unit, WriteMin: m.def.WriteMin, WriteMax: m.def.WriteMax}).CheckWrite(v); err != nil {
			n.e.writesRefused.Add(1)
			n.e.log.Warn("write refused", "device", dev.ID, "metric", m.def.Name, "err", err)
			continue
		}
		// The device write runs beside the node loop, which must not wait on a PLC.
		n.e.wg.Add(1)
		go func() {
			defer n.e.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.Write(ctx, m.def.Name, v); err != nil {
				n.e.log.Warn("device write failed", "device", dev.ID, "metric", m.def.Name, "err", err)
				return
			}
			n.e.log.Info("device written", "device", dev.ID, "metric", m.def.Name, "value", v.Any())
		}()
	}
}

// cpuPercent is the process's CPU use, in percent of one core, since the
// previous call.
func (n *node) cpuPercent() float64 {
	used, ok := cpuTime()
	if !ok {
		return 0
	}
	now := time.Now()
	defer func() { n.cpuAt, n.cpuUsed = now, used }()
	if n.cpuAt.IsZero() {
		return 0
	}
	wall := now.Sub(n.cpuAt)
	if wall <= 0 {
		return 0
	}
	return 100 * float64(used-n.cpuUsed) / float64(wall)
}

// memoryMiB is the memory the Go runtime holds from the system.
func memoryMiB() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.Sys) / (1 << 20)
}
