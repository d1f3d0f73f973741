package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// hostConsumer is the primary host's durable consumer of the Sparkplug
// stream.
var hostConsumer = jetstream.ConsumerConfig{
	Durable: consumerHost, AckPolicy: jetstream.AckAllPolicy, AckWait: time.Minute,
	MaxAckPending: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
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
	// Node, in a cluster, is this node's name: the host marks the values
	// it publishes with it (HeaderNode), because every node's host
	// publishes the same values and the backbone stores them once, but
	// its live subscribers see each node's.
	Node string
	// Acting, in a cluster, says whether this node is the host's voice
	// (clusterjobs.go): only then does the host say STATE and ask for
	// rebirths by itself, and it never says STATE at its start or stop.
	// Nil: a cloud alone, always.
	Acting func() bool
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
	return h.sayState(online, 0)
}

// publishStateAfter says STATE online with a timestamp later than after
// (the last one said, by this node or another of the cluster).
func (h *Host) publishStateAfter(after uint64) error { return h.sayState(true, after) }

func (h *Host) sayState(online bool, after uint64) error {
	ts := max(sparkplug.Millis(time.Now()), after+1)
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
	cons, err := store.ResumeConsumer(ctx, h.js, store.StreamSparkplug, hostConsumer)
	if err != nil {
		return fmt.Errorf("host: consumer: %w", err)
	}
	restored := len(h.nodes) // the loop owns the nodes from here on
	// The loops live until stop, not as long as the start context: a
	// signal that ends it must not stop them before Shutdown drains.
	ctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(h.done)
		h.loop(ctx, cons)
	}()
	go func() {
		defer close(h.tagsDone)
		h.tagWriter(ctx)
	}()
	if h.opts.Acting == nil {
		if err := h.publishState(true); err != nil {
			return fmt.Errorf("host: STATE: %w", err)
		}
	}
	h.ready.Store(true)
	h.log.Info("primary host online", "host_id", h.opts.ID, "nodes_restored", restored)
	return nil
}

// goOffline declares the host offline (a clean stop); it says whether it
// did (the host was online).
func (h *Host) goOffline() bool {
	if !h.ready.Swap(false) || h.opts.Acting != nil {
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
	if json.Unmarshal(payload, &st) != nil || st.Online || !h.ready.Load() || !h.acting() {
		return
	}
	h.log.Warn("own STATE seen offline while running; publishing online again")
	// The broker calls this while it still delivers the offline message:
	// publish after that delivery, or subscribers would see online first.
	time.AfterFunc(50*time.Millisecond, func() {
		if !h.ready.Load() || !h.acting() {
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

// acting says whether the host speaks for the cluster (always alone).
func (h *Host) acting() bool { return h.opts.Acting == nil || h.opts.Acting() }

func nodeKey(t sparkplug.Topic) string { return t.Group + "/" + t.Edge }

// loop runs the fetched Sparkplug messages through the host and publishes
// their values; the backbone's acknowledgements of those publishes are
// awaited on a second goroutine, which acks each batch in order once
// they are all in, while the loop goes on with the next.
func (h *Host) loop(ctx context.Context, cons jetstream.Consumer) {
	var out []byte
	var refs []*TagState
	l := store.Loop[[]jetstream.PubAckFuture]{Batch: 256, MaxWait: 200 * time.Millisecond, Log: h.log, Depth: 4,
		Reset: func(ctx context.Context) (jetstream.Consumer, error) {
			return store.ResumeConsumer(ctx, h.js, store.StreamSparkplug, hostConsumer)
		},
		Round: func(context.Context) error { h.checkGaps(); return nil },
		Take: func(ctx context.Context, msgs iter.Seq[jetstream.Msg]) ([]jetstream.PubAckFuture, error) {
			var futures []jetstream.PubAckFuture
			for msg := range msgs {
				f, err := h.take(ctx, msg, &out, &refs)
				if err != nil {
					return nil, err
				}
				if f != nil {
					futures = append(futures, f)
				}
			}
			return futures, nil
		},
		Finish: h.settle,
	}
	_ = l.Run(ctx, cons) // ends with ctx
}

// take runs one Sparkplug message through the host and publishes the
// values it carries, returning the publish's future (nil when it carried
// none). It fails only when ctx ended before the publish was taken.
func (h *Host) take(ctx context.Context, msg jetstream.Msg, out *[]byte, refs *[]*TagState) (jetstream.PubAckFuture, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return nil, nil
	}
	t, err := ParseSparkplugSubject(msg.Subject())
	if err != nil {
		h.malformed.Add(1)
		return nil, nil
	}
	p, err := sparkplug.Decode(msg.Data())
	if err != nil {
		h.badPayload(t, err)
		return nil, nil
	}
	h.msgs.Add(1)
	// A message in hand is finished even when a stop is under way.
	will := t.Type == sparkplug.NDEATH && msg.Headers().Get(HeaderWill) != ""
	*refs = (*refs)[:0]
	samples := h.apply(context.WithoutCancel(ctx), t, p, meta.Timestamp, true, will, refs)
	if t.Type == sparkplug.NBIRTH || t.Type == sparkplug.DBIRTH {
		select {
		case h.tagsDue <- struct{}{}:
		default: // the writer has a wake-up pending
		}
	}
	if len(samples) == 0 {
		return nil, nil
	}
	h.samples.Add(uint64(len(samples)))
	if len(*refs) == len(samples) {
		h.reg.UpdateTags(samples, *refs)
	} else {
		h.reg.Update(samples)
	}
	*out = uns.AppendBatch((*out)[:0], samples)
	subj := store.SubjectUNS + "." + store.Token(t.Group) + "." + store.Token(t.Edge)
	return h.publishUNS(ctx, subj, *out, meta.Sequence.Stream)
}

// settle waits until the backbone stored every publish of futures; it
// fails if ctx ended first.
func (h *Host) settle(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			// Re-publish synchronously until stored; the msg id makes it
			// idempotent.
			if store.InProcess(err) {
				h.log.Debug("UNS publish met another node's, retrying", "err", err)
			} else {
				h.log.Warn("UNS publish failed, retrying", "err", err)
			}
			m := f.Msg()
			retry := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
			for k, v := range m.Header {
				if k != jetstream.MsgIDHeader {
					retry.Header[k] = v
				}
			}
			if !store.PublishMsgUntilStored(ctx, h.js, retry, m.Header.Get(jetstream.MsgIDHeader), h.log) {
				return ctx.Err()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
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
	msg := &nats.Msg{Subject: subj, Data: append([]byte(nil), data...)}
	if h.opts.Node != "" {
		msg.Header = nats.Header{HeaderNode: []string{h.opts.Node}}
	}
	for {
		f, err := h.js.PublishMsgAsync(msg, jetstream.WithMsgID(id))
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

// HeaderNode names, in a cluster, the node whose host published a UNS
// batch: a node's live views take its own host's.
const HeaderNode = "Calx-Node"

// otherNode says whether a UNS batch is another node's host's copy.
func otherNode(m *nats.Msg, node string) bool {
	n := m.Header.Get(HeaderNode)
	return n != "" && n != node
}

// Errors of Write.
var (
	ErrReadOnly    = errors.New("tag is not writable")
	ErrWriteTarget = errors.New("tag's edge node or device is not online")
)

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
