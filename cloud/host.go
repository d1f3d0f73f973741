package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// TagSink receives tag metadata learnt from births.
type TagSink interface {
	UpsertTags(ctx context.Context, tags []uns.Tag) error
}

// Publisher sends MQTT messages from inside the process.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

const (
	bucketBirths    = "CALX_BIRTHS"
	consumerHost    = "host"
	rebirthInterval = 5 * time.Second
)

// metricInfo is what a birth told about one metric.
type metricInfo struct {
	name     string
	path     uns.Path
	dt       pb.DataType
	store    bool
	tag      *TagState // in the registry, for stored metrics
	alias    uint64
	hasAlias bool // the birth gave it an alias: commands use it alone
	member   bool // of a template instance
}

type metricSet struct {
	byAlias map[uint64]*metricInfo
	byName  map[string]*metricInfo
}

func newMetricSet() metricSet {
	return metricSet{byAlias: map[uint64]*metricInfo{}, byName: map[string]*metricInfo{}}
}

func (s metricSet) lookup(m *pb.Payload_Metric) (*metricInfo, bool) {
	if m.Name != nil {
		mi, ok := s.byName[m.GetName()]
		return mi, ok
	}
	mi, ok := s.byAlias[m.GetAlias()]
	return mi, ok
}

type deviceState struct {
	online  bool
	metrics metricSet
}

// NodeState is what the host knows of one edge node.
type NodeState struct {
	Group       string    `json:"group"`
	Edge        string    `json:"edge_node"`
	Online      bool      `json:"online"`
	BdSeq       uint64    `json:"bd_seq"`
	LastSeen    time.Time `json:"last_seen"`
	BirthAt     time.Time `json:"birth_at"`
	DeathReason string    `json:"death_reason,omitempty"`
	Devices     []string  `json:"devices"`
	// DevicesOffline are the devices whose last word was a DDEATH.
	DevicesOffline []string `json:"devices_offline"`
	// LastData is when the last device data of the node came in.
	LastData time.Time `json:"last_data"`
	// Values counts the device values received from the node, history
	// included.
	Values uint64 `json:"values"`
	// ClockSkewMs is the cloud's clock minus the edge's, from the node's
	// last birth or node data (network delay included).
	ClockSkewMs int64 `json:"clock_skew_ms"`
	// Malformed counts this node's payloads that could not be decoded.
	Malformed uint64 `json:"malformed"`
	// SeqGaps counts messages of this node lost on the way.
	SeqGaps uint64 `json:"seq_gaps"`
}

type nodeState struct {
	NodeState
	lastSeq     int // -1: unknown
	metrics     metricSet
	devices     map[string]*deviceState
	lastRebirth time.Time
	gapAt       time.Time // when an unfilled sequence gap was seen
	lastBadLog  time.Time
	// calx says the node is a Calx edge (its NBIRTH names the Calx
	// version): it reads a command's value without a datatype.
	calx bool
}

// HostStats are the primary host's counters.
type HostStats struct {
	Messages         uint64
	Samples          uint64
	Malformed        uint64
	SeqGaps          uint64
	Unknown          uint64
	RebirthsAsked    uint64
	StaleDeathsIgnrd uint64
	// ForeignClaims counts birth metrics refused for naming a UNS path
	// of another edge node; OverTagCap, those past the node's tag cap.
	ForeignClaims uint64
	OverTagCap    uint64
}

// HostOptions configure the primary host application.
type HostOptions struct {
	// ID is the Sparkplug host id; STATE goes to spBv1.0/STATE/<ID>.
	ID string
	// ReorderTimeout is how long a sequence gap may stay open before the
	// host asks for a rebirth. Zero means 2s.
	ReorderTimeout time.Duration
	// Claims says which node a UNS path belongs to and how many tags a
	// node may define; without it, a path stays with the node that
	// defined it first and every node has fleet.DefaultMaxTags.
	Claims Claims
}

// Host is the Sparkplug B primary host application. It consumes every
// persisted Sparkplug message in order, keeps the birth, alias and sequence
// state of each edge node, and turns data into UNS samples on the backbone.
type Host struct {
	opts    HostOptions
	js      jetstream.JetStream
	pub     Publisher
	tags    TagSink
	reg     *Registry
	log     *slog.Logger
	kv      jetstream.KeyValue
	nodes   map[string]*nodeState
	mu      sync.RWMutex // guards nodes for readers outside the loop
	newTags []uns.Tag    // defined by births, metadata not yet stored

	msgs, samples, malformed, gaps, unknown, rebirths, staleDeaths atomic.Uint64
	foreign, overCap                                               atomic.Uint64

	cancel  context.CancelFunc
	done    chan struct{}
	ready   atomic.Bool
	stateTS atomic.Uint64 // of the STATE online of this run
	// tagsDue wakes the tag writer, which stores the metadata of births
	// beside the loop: a birth storm must not hold up the data behind it.
	tagsDue  chan struct{}
	tagsDone chan struct{}
}

func newHost(opts HostOptions, js jetstream.JetStream, pub Publisher, tags TagSink, reg *Registry, log *slog.Logger) (*Host, error) {
	if err := uns.ValidateSegment(opts.ID); err != nil {
		return nil, fmt.Errorf("host id %q: %w", opts.ID, err)
	}
	if opts.ReorderTimeout == 0 {
		opts.ReorderTimeout = 2 * time.Second
	}
	return &Host{opts: opts, js: js, pub: pub, tags: tags, reg: reg, log: log.With("component", "host"),
		nodes: map[string]*nodeState{}, done: make(chan struct{}), tagsDue: make(chan struct{}, 1), tagsDone: make(chan struct{})}, nil
}

func (h *Host) stateTopic() string {
	return sparkplug.Topic{Type: sparkplug.STATE, HostID: h.opts.ID}.String()
}

// publishState says whether the host is online. The offline STATE of a
// session carries the timestamp of its online one, as Sparkplug 3.0 asks.
func (h *Host) publishState(online bool) error {
	ts := sparkplug.Millis(time.Now())
	if online {
		h.stateTS.Store(ts)
	} else if born := h.stateTS.Load(); born != 0 {
		ts = born
	}
	b, _ := json.Marshal(map[string]any{"online": online, "timestamp": ts})
	return h.pub.Publish(h.stateTopic(), b, true, 1)
}

// start restores the births, begins consuming, and declares the host online.
func (h *Host) start(ctx context.Context) error {
	kv, err := h.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketBirths, Storage: jetstream.FileStorage, History: 1})
	if err != nil {
		return fmt.Errorf("host: births bucket: %w", err)
	}
	h.kv = kv
	if err := h.restore(ctx); err != nil {
		return err
	}
	cons, err := store.ResumeConsumer(ctx, h.js, store.StreamSparkplug, jetstream.ConsumerConfig{
		Durable: consumerHost, AckPolicy: jetstream.AckAllPolicy, AckWait: time.Minute,
		MaxAckPending: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("host: consumer: %w", err)
	}
	ctx, h.cancel = context.WithCancel(ctx)
	go func() {
		defer close(h.done)
		h.loop(ctx, cons)
	}()
	go func() {
		defer close(h.tagsDone)
		h.tagWriter(ctx)
	}()
	if err := h.publishState(true); err != nil {
		return fmt.Errorf("host: STATE: %w", err)
	}
	h.ready.Store(true)
	h.log.Info("primary host online", "host_id", h.opts.ID, "nodes_restored", len(h.nodes))
	return nil
}

// goOffline declares the host offline (a clean stop); it says whether it
// did (the host was online).
func (h *Host) goOffline() bool {
	if !h.ready.Swap(false) {
		return false
	}
	if err := h.publishState(false); err != nil {
		h.log.Warn("STATE offline not published", "err", err)
	}
	return true
}

// onOwnState answers a STATE offline for this host seen while it runs (a
// stale retained message, or another process using its id) by declaring
// itself online again.
func (h *Host) onOwnState(payload []byte) {
	var st struct {
		Online bool `json:"online"`
	}
	if json.Unmarshal(payload, &st) != nil || st.Online || !h.ready.Load() {
		return
	}
	h.log.Warn("own STATE seen offline while running; publishing online again")
	// The broker calls this while it still delivers the offline message:
	// publish after that delivery, or subscribers would see online first.
	time.AfterFunc(50*time.Millisecond, func() {
		if !h.ready.Load() {
			return
		}
		if err := h.publishState(true); err != nil {
			h.log.Warn("STATE online not published", "err", err)
		}
	})
}

// stopLoop waits for the loop to finish its batch. STATE offline is
// published by the caller while the broker still runs.
func (h *Host) stopLoop() {
	if h.cancel == nil {
		return
	}
	h.ready.Store(false)
	h.cancel()
	<-h.done
	<-h.tagsDone
}

// tagWriter stores tag metadata when births defined some, and what is left
// when the host stops.
func (h *Host) tagWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			h.storeTags(context.WithoutCancel(ctx))
			return
		case <-h.tagsDue:
			h.storeTags(ctx)
		}
	}
}

// restore replays the stored births so that aliases of data still in the
// stream can be resolved after a restart.
func (h *Host) restore(ctx context.Context) error {
	lister, err := h.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("host: births: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// Node births before device births: a node key has fewer tokens.
	sortByTokens(keys)
	for _, k := range keys {
		e, err := h.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		t, err := ParseSparkplugSubject(store.SubjectSparkplug + "." + k)
		if err != nil {
			continue
		}
		p, err := sparkplug.Decode(e.Value())
		if err != nil {
			continue
		}
		h.apply(ctx, t, p, e.Created(), false, false, nil)
		if ns := h.nodes[nodeKey(t)]; ns != nil {
			ns.lastSeq = -1
		}
	}
	// A crash can fall between a birth stored and its metadata stored.
	h.storeTags(ctx)
	return nil
}

func sortByTokens(keys []string) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && strings.Count(keys[j], ".") < strings.Count(keys[j-1], "."); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
}

func nodeKey(t sparkplug.Topic) string { return t.Group + "/" + t.Edge }

// hostBatch is a fetched batch of Sparkplug messages whose UNS batches
// are published: once they are stored, last acks the batch.
type hostBatch struct {
	futures []jetstream.PubAckFuture
	last    jetstream.Msg
}

// loop runs the fetched Sparkplug messages through the host and publishes
// their values; a second goroutine waits for the backbone to store them
// and acks each batch in order, while the loop goes on with the next.
func (h *Host) loop(ctx context.Context, cons jetstream.Consumer) {
	settled := make(chan hostBatch, 4)
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		failed := false
		for b := range settled {
			if failed {
				continue // not acked: redelivered
			}
			if !h.settle(ctx, b.futures) {
				failed = true
				continue
			}
			if b.last != nil {
				if err := b.last.Ack(); err != nil {
					h.log.Warn("ack failed", "err", err)
				}
			}
		}
	}()
	defer func() {
		close(settled)
		<-acked
	}()
	var out []byte
	var refs []*TagState
	for ctx.Err() == nil {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("fetch failed", "err", err)
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		var last jetstream.Msg
		var futures []jetstream.PubAckFuture
		for msg := range batch.Messages() {
			last = msg
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			t, err := ParseSparkplugSubject(msg.Subject())
			if err != nil {
				h.malformed.Add(1)
				continue
			}
			p, err := sparkplug.Decode(msg.Data())
			if err != nil {
				h.badPayload(t, err)
				continue
			}
			h.msgs.Add(1)
			// A message in hand is finished even when a stop is under way.
			will := t.Type == sparkplug.NDEATH && msg.Headers().Get(HeaderWill) != ""
			refs = refs[:0]
			samples := h.apply(context.WithoutCancel(ctx), t, p, meta.Timestamp, true, will, &refs)
			if t.Type == sparkplug.NBIRTH || t.Type == sparkplug.DBIRTH {
				select {
				case h.tagsDue <- struct{}{}:
				default: // the writer has a wake-up pending
				}
			}
			if len(samples) == 0 {
				continue
			}
			h.samples.Add(uint64(len(samples)))
			if len(refs) == len(samples) {
				h.reg.UpdateTags(samples, refs)
			} else {
				h.reg.Update(samples)
			}
			out = uns.AppendBatch(out[:0], samples)
			subj := store.SubjectUNS + "." + store.Token(t.Group) + "." + store.Token(t.Edge)
			f, err := h.publishUNS(ctx, subj, out, meta.Sequence.Stream)
			if err != nil {
				return
			}
			futures = append(futures, f)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			h.log.Warn("fetch batch ended with error", "err", err)
		}
		settled <- hostBatch{futures: futures, last: last}
		h.checkGaps()
	}
}

// settle waits until the backbone stored every publish of futures; it
// returns false if ctx ended first.
func (h *Host) settle(ctx context.Context, futures []jetstream.PubAckFuture) bool {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			// Re-publish synchronously until stored; the msg id makes it
			// idempotent.
			h.log.Warn("UNS publish failed, retrying", "err", err)
			if !h.republish(ctx, f.Msg().Subject, f.Msg().Data, f.Msg().Header.Get("Nats-Msg-Id")) {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// badPayload counts a payload that does not decode, per node, and logs it
// at most once a minute per node.
func (h *Host) badPayload(t sparkplug.Topic, err error) {
	h.malformed.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	ns := h.nodes[nodeKey(t)]
	if ns == nil {
		ns = &nodeState{NodeState: NodeState{Group: t.Group, Edge: t.Edge}, lastSeq: -1, metrics: newMetricSet(), devices: map[string]*deviceState{}}
		h.nodes[nodeKey(t)] = ns
	}
	ns.Malformed++
	if time.Since(ns.lastBadLog) >= time.Minute {
		ns.lastBadLog = time.Now()
		h.log.Warn("malformed payload rejected", "topic", t.String(), "count", ns.Malformed, "err", err)
	}
}

// checkGaps asks for a rebirth from nodes whose sequence gap stayed open
// longer than the reorder timeout.
func (h *Host) checkGaps() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ns := range h.nodes {
		if !ns.gapAt.IsZero() && time.Since(ns.gapAt) >= h.opts.ReorderTimeout {
			ns.gapAt = time.Time{}
			h.askRebirth(ns, "sequence gap", true)
		}
	}
}

func (h *Host) publishUNS(ctx context.Context, subj string, data []byte, seq uint64) (jetstream.PubAckFuture, error) {
	id := "spb-" + strconv.FormatUint(seq, 10)
	buf := append([]byte(nil), data...)
	for {
		f, err := h.js.PublishAsync(subj, buf, jetstream.WithMsgID(id))
		if err == nil {
			return f, nil
		}
		h.log.Warn("UNS publish stalled", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (h *Host) republish(ctx context.Context, subj string, data []byte, id string) bool {
	for ctx.Err() == nil {
		if _, err := h.js.Publish(ctx, subj, data, jetstream.WithMsgID(id)); err == nil {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// apply runs one Sparkplug message through the host's state and returns the
// samples it carries. live is false while restoring births; will marks an
// NDEATH the broker sent for a lost connection. For data messages, refs (if
// not nil) is set to the samples' tags in the registry.
func (h *Host) apply(ctx context.Context, t sparkplug.Topic, p *pb.Payload, at time.Time, live, will bool, refs *[]*TagState) []uns.Sample {
	key := nodeKey(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	ns := h.nodes[key]
	if ns != nil {
		ns.LastSeen = at
	}
	switch t.Type {
	case sparkplug.NBIRTH:
		bd, _ := metricUint(p, sparkplug.MetricBdSeq)
		ns = &nodeState{NodeState: NodeState{Group: t.Group, Edge: t.Edge, Online: true, BdSeq: bd, LastSeen: at, BirthAt: at},
			lastSeq: int(p.GetSeq()), metrics: newMetricSet(), devices: map[string]*deviceState{}}
		if old := h.nodes[key]; old != nil {
			ns.lastRebirth, ns.Malformed, ns.SeqGaps, ns.lastBadLog = old.lastRebirth, old.Malformed, old.SeqGaps, old.lastBadLog
			for id := range old.devices {
				ns.Devices = append(ns.Devices, id)
			}
		}
		h.nodes[key] = ns
		for _, m := range p.GetMetrics() {
			ns.calx = ns.calx || m.GetName() == sparkplug.MetricCalxVersion
		}
		if live {
			ns.skew(at, p)
		}
		samples, kept := h.birth(ctx, ns, t, p, ns.metrics)
		if live {
			h.storeBirth(ctx, t, kept)
		}
		return samples
	case sparkplug.DBIRTH:
		if ns == nil {
			h.unknownNode(t, live)
			return nil
		}
		h.checkSeq(ns, t, p, live)
		ds := &deviceState{online: true, metrics: newMetricSet()}
		if _, had := ns.devices[t.Device]; !had {
			ns.Devices = append(ns.Devices, t.Device)
		}
		ns.devices[t.Device] = ds
		samples, kept := h.birth(ctx, ns, t, p, ds.metrics)
		if live {
			h.storeBirth(ctx, t, kept)
		}
		return samples
	case sparkplug.NDATA, sparkplug.DDATA:
		if ns == nil || !ns.Online {
			h.unknownNode(t, live)
			return nil
		}
		h.checkSeq(ns, t, p, live)
		set := ns.metrics
		if t.Type == sparkplug.NDATA && live {
			ns.skew(at, p)
		}
		if t.Type == sparkplug.DDATA {
			ns.LastData = at
			ns.Values += uint64(len(p.GetMetrics()))
			ds, ok := ns.devices[t.Device]
			if !ok {
				h.askRebirth(ns, "data from a device without birth", live)
				return nil
			}
			set = ds.metrics
		}
		out, tags := h.data(ns, t, p, set, live)
		if refs != nil {
			*refs = tags
		}
		return out
	case sparkplug.NDEATH:
		if ns == nil {
			return nil
		}
		if bd, ok := metricUint(p, sparkplug.MetricBdSeq); ok && bd != ns.BdSeq {
			h.staleDeaths.Add(1)
			return nil
		}
		ns.Online = false
		ns.DeathReason = "stopped: the edge sent its NDEATH"
		if will {
			ns.DeathReason = "connection lost: the broker sent the edge's Will"
		}
		var out []uns.Sample
		out = appendStale(out, ns.metrics, at)
		for _, ds := range ns.devices {
			ds.online = false
			out = appendStale(out, ds.metrics, at)
		}
		return out
	case sparkplug.DDEATH:
		if ns == nil {
			return nil
		}
		h.checkSeq(ns, t, p, live)
		ds, ok := ns.devices[t.Device]
		if !ok {
			return nil
		}
		ds.online = false
		if ts := p.GetTimestamp(); ts > 0 {
			at = sparkplug.Timestamp(ts)
		}
		return appendStale(nil, ds.metrics, at)
	}
	return nil
}

// skew records the clock skew from a node message sent as it was made
// (NBIRTH, NDATA: never backlog): receipt time minus its timestamp.
func (ns *nodeState) skew(at time.Time, p *pb.Payload) {
	if ts := p.GetTimestamp(); ts > 0 {
		ns.ClockSkewMs = at.UnixMilli() - int64(ts)
	}
}

func appendStale(out []uns.Sample, set metricSet, at time.Time) []uns.Sample {
	for _, mi := range set.byName {
		if mi.store {
			out = append(out, uns.Sample{Path: mi.path, TS: at, Value: uns.Null, Quality: uns.Bad})
		}
	}
	return out
}

func (h *Host) storeBirth(ctx context.Context, t sparkplug.Topic, p *pb.Payload) {
	b, err := proto.Marshal(p)
	if err == nil {
		key := strings.TrimPrefix(SparkplugSubject(sparkplug.Topic{Group: t.Group, Edge: t.Edge, Type: t.Type, Device: t.Device}), store.SubjectSparkplug+".")
		_, err = h.kv.Put(ctx, key, b)
	}
	if err != nil {
		h.log.Warn("birth not stored", "topic", t.String(), "err", err)
	}
}

// checkSeq verifies the node's message sequence and asks for a rebirth on a
// gap, as values in between were lost on the way.
func (h *Host) checkSeq(ns *nodeState, t sparkplug.Topic, p *pb.Payload, live bool) {
	if p.Seq == nil {
		return
	}
	seq := int(p.GetSeq())
	if ns.lastSeq >= 0 && seq != (ns.lastSeq+1)%256 {
		h.gaps.Add(1)
		ns.SeqGaps++
		h.log.Warn("sequence gap", "node", nodeKey(t), "want", (ns.lastSeq+1)%256, "got", seq)
		if live && ns.gapAt.IsZero() {
			ns.gapAt = time.Now()
		}
	}
	ns.lastSeq = seq
}

func (h *Host) unknownNode(t sparkplug.Topic, live bool) {
	h.unknown.Add(1)
	ns := &nodeState{NodeState: NodeState{Group: t.Group, Edge: t.Edge}, lastSeq: -1, metrics: newMetricSet(), devices: map[string]*deviceState{}}
	if old := h.nodes[nodeKey(t)]; old != nil {
		ns = old
	} else {
		h.nodes[nodeKey(t)] = ns
	}
	h.askRebirth(ns, "data before birth", live)
}

func (h *Host) askRebirth(ns *nodeState, why string, live bool) {
	if !live || time.Since(ns.lastRebirth) < rebirthInterval {
		return
	}
	ns.lastRebirth = time.Now()
	m := &pb.Payload_Metric{Name: proto.String(sparkplug.MetricRebirth), Timestamp: proto.Uint64(sparkplug.Millis(time.Now()))}
	if mi, ok := ns.metrics.byName[sparkplug.MetricRebirth]; ok {
		m = commandMetric(mi, sparkplug.MetricRebirth, ns.calx)
	} else if !ns.calx {
		m.Datatype = proto.Uint32(uint32(pb.DataType_Boolean))
	}
	m.Value = &pb.Payload_Metric_BooleanValue{BooleanValue: true}
	p := &pb.Payload{Timestamp: proto.Uint64(sparkplug.Millis(time.Now())), Metrics: []*pb.Payload_Metric{m}}
	b, _ := proto.Marshal(p)
	topic := sparkplug.Topic{Group: ns.Group, Type: sparkplug.NCMD, Edge: ns.Edge}.String()
	if err := h.pub.Publish(topic, b, false, 0); err != nil {
		h.log.Warn("rebirth request failed", "topic", topic, "err", err)
		return
	}
	h.rebirths.Add(1)
	h.log.Info("rebirth requested", "node", ns.Group+"/"+ns.Edge, "reason", why)
}

// birth learns the metrics of a birth and returns their values, and the
// birth as it is kept for a restart (claims.go).
func (h *Host) birth(ctx context.Context, ns *nodeState, t sparkplug.Topic, p *pb.Payload, set metricSet) ([]uns.Sample, *pb.Payload) {
	var tags []uns.Tag
	var out []uns.Sample
	sc := h.newScope(ns, t)
	for _, m := range p.GetMetrics() {
		tags, out = h.learn(sc, m.GetName(), t, p, set, m, m.GetName(), "", tags, out)
	}
	h.report(sc, t)
	// Stored by the tag writer: the metadata write waits for the
	// historian's writer, and ingest must not.
	h.newTags = append(h.newTags, tags...)
	return out, allowedBirth(p, sc)
}

// storeTags writes the metadata of the tags births defined since the last
// call. A birth repeats its tags: one that changes nothing writes nothing.
func (h *Host) storeTags(ctx context.Context) {
	h.mu.Lock()
	tags := h.newTags
	h.newTags = nil
	h.mu.Unlock()
	if len(tags) == 0 || h.tags == nil {
		return
	}
	if err := h.tags.UpsertTags(ctx, tags); err != nil {
		h.log.Error("tag metadata not stored", "tags", len(tags), "err", err)
	}
}

// learn records one birth metric under name. A template instance becomes
// one tag per member, named <metric>/<member>; a template definition is
// a type, not a tag.
func (h *Host) learn(sc *birthScope, top string, t sparkplug.Topic, p *pb.Payload, set metricSet, m *pb.Payload_Metric, name string, base uns.Path,
	tags []uns.Tag, out []uns.Sample) ([]uns.Tag, []uns.Sample) {
	dt := pb.DataType(m.GetDatatype())
	if dt == pb.DataType_Template {
		tv := m.GetTemplateValue()
		if tv == nil || tv.GetIsDefinition() {
			return tags, out
		}
		mi := &metricInfo{name: name, dt: dt, member: base != ""}
		set.byName[name] = mi
		if m.Alias != nil {
			set.byAlias[m.GetAlias()] = mi
			mi.alias, mi.hasAlias = m.GetAlias(), true
		}
		mi.path = h.metricPath(t, m, name, base)
		for _, member := range tv.GetMetrics() {
			tags, out = h.learn(sc, top, t, p, set, member, name+"/"+member.GetName(), mi.path, tags, out)
		}
		return tags, out
	}
	mi := &metricInfo{name: name, dt: dt, member: base != ""}
	udt, stored := sparkplug.UNSType(dt)
	mi.store = stored && name != sparkplug.MetricBdSeq && !strings.HasPrefix(name, "Node Control/")
	mi.path = h.metricPath(t, m, name, base)
	if err := mi.path.Validate(); err != nil {
		mi.store = false
		h.log.Warn("metric not stored: no valid UNS path", "topic", t.String(), "metric", name, "err", err)
	} else if mi.store && !h.claim(sc, t, mi.path, top) {
		mi.store = false
	}
	set.byName[name] = mi
	if m.Alias != nil {
		set.byAlias[m.GetAlias()] = mi
		mi.alias, mi.hasAlias = m.GetAlias(), true
	}
	if !mi.store {
		return tags, out
	}
	unit, _ := sparkplug.PropertyString(m, sparkplug.PropEngUnit)
	desc, _ := sparkplug.PropertyString(m, "description")
	// A metric is writable when its birth says readOnly: false.
	ro, hasRO := sparkplug.PropertyBool(m, sparkplug.PropWritable)
	tag := uns.Tag{Path: mi.path, DataType: udt, Unit: unit, Description: desc, Writable: hasRO && !ro,
		Sparkplug: uns.SparkplugAddr{Group: t.Group, Edge: t.Edge, Device: t.Device, Metric: name}}
	if lo, ok := sparkplug.PropertyFloat(m, sparkplug.PropWriteMin); ok {
		tag.WriteMin = &lo
	}
	if hi, ok := sparkplug.PropertyFloat(m, sparkplug.PropWriteMax); ok {
		tag.WriteMax = &hi
	}
	tags = append(tags, tag)
	mi.tag = h.reg.Define(tag)
	// A birth metric with no value (is_null) is no reading: nothing is
	// stored for it, and the tag's first value, however old its time,
	// is its current value.
	if m.GetIsNull() {
		return tags, out
	}
	if s, ok := h.sample(p, m, mi); ok {
		out = append(out, s)
	}
	return tags, out
}

// metricPath is the UNS path of a metric: the one a Calx edge names in its
// birth, else <group>/<edge>/<device>/<metric> (<group>/_edge/<edge>/<metric>
// for node metrics); a template member goes under its instance.
func (h *Host) metricPath(t sparkplug.Topic, m *pb.Payload_Metric, name string, base uns.Path) uns.Path {
	if path, ok := sparkplug.PropertyString(m, sparkplug.PropUNSPath); ok {
		return uns.Path(path)
	}
	if base != "" {
		return base + "/" + uns.Path(m.GetName())
	}
	if t.Device != "" {
		return uns.Path(t.Group + "/" + t.Edge + "/" + t.Device + "/" + name)
	}
	return uns.Path(t.Group + "/_edge/" + t.Edge + "/" + name)
}

func (h *Host) data(ns *nodeState, t sparkplug.Topic, p *pb.Payload, set metricSet, live bool) ([]uns.Sample, []*TagState) {
	out := make([]uns.Sample, 0, len(p.GetMetrics()))
	tags := make([]*TagState, 0, len(p.GetMetrics()))
	for _, m := range p.GetMetrics() {
		mi, ok := set.lookup(m)
		if !ok {
			h.unknown.Add(1)
			h.askRebirth(ns, "unknown metric alias", live)
			continue
		}
		out, tags = h.collect(ns, p, set, m, mi, out, tags)
	}
	return out, tags
}

// collect adds the samples of one data metric, and their tags in the
// registry; a template instance's members are found by name under their
// instance.
func (h *Host) collect(ns *nodeState, p *pb.Payload, set metricSet, m *pb.Payload_Metric, mi *metricInfo, out []uns.Sample, tags []*TagState) ([]uns.Sample, []*TagState) {
	if mi.dt == pb.DataType_Template {
		for _, member := range m.GetTemplateValue().GetMetrics() {
			if mm, ok := set.byName[mi.name+"/"+member.GetName()]; ok {
				if member.Timestamp == nil {
					member.Timestamp = m.Timestamp
				}
				out, tags = h.collect(ns, p, set, member, mm, out, tags)
			}
		}
		return out, tags
	}
	if !mi.store {
		return out, tags
	}
	if s, ok := h.sample(p, m, mi); ok {
		out = append(out, s)
		tags = append(tags, mi.tag)
	}
	return out, tags
}

func (h *Host) sample(p *pb.Payload, m *pb.Payload_Metric, mi *metricInfo) (uns.Sample, bool) {
	v, err := sparkplug.GetValue(m, mi.dt)
	if err != nil {
		h.malformed.Add(1)
		return uns.Sample{}, false
	}
	ts := m.GetTimestamp()
	if ts == 0 {
		ts = p.GetTimestamp()
	}
	q := sparkplug.PropertyQuality(m)
	if v.Kind == uns.KindNull && q == uns.Good {
		q = uns.Bad
	}
	return uns.Sample{Path: mi.path, TS: sparkplug.Timestamp(ts), Value: v, Quality: q, Historical: m.GetIsHistorical()}, true
}

func metricUint(p *pb.Payload, name string) (uint64, bool) {
	for _, m := range p.GetMetrics() {
		if m.GetName() != name {
			continue
		}
		switch v := m.Value.(type) {
		case *pb.Payload_Metric_LongValue:
			return v.LongValue, true
		case *pb.Payload_Metric_IntValue:
			return uint64(v.IntValue), true
		}
	}
	return 0, false
}

// Errors of Write.
var (
	ErrReadOnly    = errors.New("tag is not writable")
	ErrWriteTarget = errors.New("tag's edge node or device is not online")
)

// Write sends a command (DCMD, or NCMD for a node metric) that sets a
// writable tag, by metric name, with the datatype of its birth.
func (h *Host) Write(path uns.Path, v uns.Value) error {
	tag, ok := h.reg.Get(path)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownPath, path)
	}
	if !tag.Writable {
		return fmt.Errorf("%w: %s", ErrReadOnly, path)
	}
	if err := tag.CheckWrite(v); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	a := tag.Sparkplug
	h.mu.RLock()
	ns := h.nodes[a.Group+"/"+a.Edge]
	var mi *metricInfo
	online := ns != nil && ns.Online
	calx := ns != nil && ns.calx
	if online {
		set := ns.metrics
		if a.Device != "" {
			ds, ok := ns.devices[a.Device]
			online = ok && ds.online
			if ok {
				set = ds.metrics
			}
		}
		mi = set.byName[a.Metric]
	}
	h.mu.RUnlock()
	if !online || mi == nil {
		return fmt.Errorf("%w: %s", ErrWriteTarget, path)
	}
	m := commandMetric(mi, a.Metric, calx)
	sparkplug.SetValue(m, mi.dt, v)
	b, err := proto.Marshal(&pb.Payload{Timestamp: proto.Uint64(sparkplug.Millis(time.Now())), Metrics: []*pb.Payload_Metric{m}})
	if err != nil {
		return err
	}
	t := sparkplug.Topic{Group: a.Group, Type: sparkplug.NCMD, Edge: a.Edge}
	if a.Device != "" {
		t.Type, t.Device = sparkplug.DCMD, a.Device
	}
	if err := h.pub.Publish(t.String(), b, false, 0); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// commandMetric addresses a metric in an NCMD or DCMD as Sparkplug says:
// by its alias alone when its birth gave it one, else by name; with a
// timestamp, and without a datatype for a Calx edge. Other nodes get the
// datatype, which Sparkplug says should be left out, because Eclipse
// Tahu's decoder, which many edge nodes are built on, cannot read a value
// without it (docs/SPARKPLUG.md).
func commandMetric(mi *metricInfo, name string, calx bool) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Timestamp: proto.Uint64(sparkplug.Millis(time.Now()))}
	if !calx {
		m.Datatype = proto.Uint32(uint32(mi.dt))
	}
	if mi.hasAlias && !mi.member {
		m.Alias = proto.Uint64(mi.alias)
	} else {
		m.Name = proto.String(name)
	}
	return m
}

// ErrUnknownPath is returned for a path that is not in the namespace.
var ErrUnknownPath = errors.New("no such tag in the namespace")

// RequestRebirth asks an edge node for a rebirth (NCMD Node Control/Rebirth),
// as the host does by itself on a sequence gap or an unknown alias.
func (h *Host) RequestRebirth(group, edge string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ns, ok := h.nodes[group+"/"+edge]
	if !ok {
		return fmt.Errorf("unknown edge node %s/%s", group, edge)
	}
	ns.lastRebirth = time.Time{}
	h.askRebirth(ns, "requested", true)
	return nil
}

// Nodes returns the state of every edge node the host knows.
func (h *Host) Nodes() []NodeState {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]NodeState, 0, len(h.nodes))
	for _, ns := range h.nodes {
		n := ns.NodeState
		n.Devices = append([]string(nil), ns.Devices...)
		n.DevicesOffline = []string{}
		for _, id := range ns.Devices {
			if ds := ns.devices[id]; ds == nil || !ds.online {
				n.DevicesOffline = append(n.DevicesOffline, id)
			}
		}
		out = append(out, n)
	}
	return out
}

// Stats returns the host's counters.
func (h *Host) Stats() HostStats {
	return HostStats{Messages: h.msgs.Load(), Samples: h.samples.Load(), Malformed: h.malformed.Load(),
		SeqGaps: h.gaps.Load(), Unknown: h.unknown.Load(), RebirthsAsked: h.rebirths.Load(), StaleDeathsIgnrd: h.staleDeaths.Load(),
		ForeignClaims: h.foreign.Load(), OverTagCap: h.overCap.Load()}
}
