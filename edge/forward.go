package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Store and forward, as the node sends it (docs/STORE_AND_FORWARD.md):
// at each birth the buffer splits in two lanes. The backlog lane holds what
// was buffered before the birth and goes out oldest first, flagged
// is_historical, at most DrainRate values a second; the live lane holds
// what is read after it and goes out at once. A buffered message leaves
// the buffer only when a receipt from the cloud covers every Sparkplug
// message that carried its values.

// Per flush, at most this many buffered messages of each lane are sent, so
// that neither lane starves the other nor the node's command handling.
const (
	liveBatch    = 1024
	backlogBatch = 256
)

type sent struct {
	seq uint64    // stream sequence of the buffered message
	idx uint64    // number, in the session, of the last Sparkplug message that carried it
	at  time.Time // when it was sent
}

type lane struct {
	cons      jetstream.Consumer
	end       uint64 // backlog: last sequence that belongs to the lane
	done      bool
	pending   []sent // sent, awaiting a receipt, in stream order
	confirmed uint64 // every message up to this sequence is stored in the cloud
}

type forwarder struct {
	n             *node
	backlog, live *lane
	bornAt        time.Time
	receipted     bool // a receipt came in this session: the host is a Calx cloud
	tokens        float64
	refill        time.Time
	purged        uint64
	samples       []uns.Sample
	// values and buf are send's, kept for the next message.
	values []sparkplug.DataValue
	buf    []byte
	// carried are lost devices born only to carry their buffered values;
	// each gets its DDEATH once the backlog is sent.
	carried []*device
}

func newForwarder(ctx context.Context, n *node) (*forwarder, error) {
	buf := n.e.buf
	st, err := buf.state(ctx)
	if err != nil {
		return nil, fmt.Errorf("edge buffer: %w", err)
	}
	f := &forwarder{n: n, bornAt: time.Now(), refill: time.Now(), purged: st.FirstSeq - 1}
	f.backlog = &lane{end: st.LastSeq, confirmed: st.FirstSeq - 1, done: st.Msgs == 0}
	f.live = &lane{confirmed: st.LastSeq}
	if st.Msgs == 0 {
		f.backlog.confirmed = st.LastSeq
	}
	open := func(start uint64) (jetstream.Consumer, error) {
		return buf.js.OrderedConsumer(ctx, streamBuffer, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start})
	}
	if !f.backlog.done {
		if f.backlog.cons, err = open(st.FirstSeq); err != nil {
			return nil, fmt.Errorf("edge buffer: %w", err)
		}
	}
	if f.live.cons, err = open(st.LastSeq + 1); err != nil {
		return nil, fmt.Errorf("edge buffer: %w", err)
	}
	return f, nil
}

func (f *forwarder) backlogMsgs() uint64 {
	if f.backlog.done {
		return 0
	}
	return f.backlog.end - f.backlog.confirmed
}

// flush sends device events, then live values, then a slice of the
// backlog. more is true while backlog remains that could be sent now.
func (n *node) flush(ctx context.Context) (more bool, err error) {
	if err := n.events(); err != nil {
		return false, err
	}
	f := n.fw
	if _, err := f.drain(ctx, f.live, liveBatch, false); err != nil {
		return false, err
	}
	if f.backlog.done {
		return false, f.carriedDeaths()
	}
	var sentMsgs int
	if rate := n.opts.DrainRate; rate > 0 {
		now := time.Now()
		f.tokens = min(f.tokens+rate*now.Sub(f.refill).Seconds(), rate)
		f.refill = now
		// One message per fetch: a fetched message must be sent, and the
		// budget says after each one whether another may go.
		for sentMsgs < backlogBatch && f.tokens > 0 && !f.backlog.done {
			k, err := f.drain(ctx, f.backlog, 1, true)
			if err != nil {
				return false, err
			}
			if k == 0 {
				break
			}
			sentMsgs += k
		}
		if f.tokens <= 0 {
			return false, nil // wait for the budget to refill at the next tick
		}
	} else {
		var err error
		if sentMsgs, err = f.drain(ctx, f.backlog, backlogBatch, true); err != nil {
			return false, err
		}
	}
	if sentMsgs == 0 && !f.backlog.done {
		// Bounds may have dropped the rest of the backlog before it was sent.
		if st, err := n.e.buf.state(ctx); err == nil && (st.Msgs == 0 || st.FirstSeq > f.backlog.end) {
			f.backlog.done = true
		}
	}
	if f.backlog.done {
		if err := f.carriedDeaths(); err != nil {
			return false, err
		}
	}
	return !f.backlog.done && sentMsgs > 0, nil
}

// drain sends up to limit buffered messages of a lane.
func (f *forwarder) drain(ctx context.Context, l *lane, limit int, historical bool) (int, error) {
	batch, err := l.cons.FetchNoWait(limit)
	if err != nil {
		return 0, fmt.Errorf("edge buffer: %w", err)
	}
	n := 0
	for msg := range batch.Messages() {
		meta, err := msg.Metadata()
		if err != nil {
			// Skipping it could trim it unsent: start the session over.
			return n, fmt.Errorf("edge buffer: %w", err)
		}
		seq := meta.Sequence.Stream
		if historical && seq > l.end {
			l.done = true
			break
		}
		values, err := f.send(msg.Data(), historical)
		if err != nil {
			return n, err
		}
		l.pending = append(l.pending, sent{seq: seq, idx: f.n.msgs, at: time.Now()})
		n++
		if historical && seq == l.end {
			l.done = true
			break
		}
		if historical {
			// Spend the drain budget; a message that overdraws it is repaid later.
			f.tokens -= float64(values)
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
		return n, fmt.Errorf("edge buffer: %w", err)
	}
	return n, nil
}

// send publishes the values of one buffered message as DDATA, one message
// per device and at most maxMetricsPerMsg metrics each, by alias.
func (f *forwarder) send(data []byte, historical bool) (int, error) {
	n := f.n
	var err error
	f.samples, err = uns.DecodeBatch(f.samples[:0], data)
	if err != nil {
		// Nothing that reads it back could do better: count and go on.
		n.e.failed.Add(1)
		n.log.Error("unreadable buffered message skipped", "err", err)
		return 0, nil
	}
	var cur *device
	vals := f.values[:0]
	defer func() { f.values = vals[:0] }() // its room, for the next message
	out := func() error {
		if len(vals) == 0 {
			return nil
		}
		n := f.n
		sparkplug.SortData(vals)
		ms, seq := sparkplug.Millis(time.Now()), *n.nextSeq()
		var err error
		if n.opts.SparkplugTemplates {
			// The values are members of the device's template instance.
			p := &pb.Payload{Timestamp: proto.Uint64(ms), Seq: proto.Uint64(seq)}
			members := make([]*pb.Payload_Metric, 0, len(vals))
			for _, v := range vals {
				if m, ok := n.e.metricAt(v.Sample.Path); ok {
					pm := sparkplug.DataMetric(v.Alias, m.def.DataType, v.Sample, historical)
					pm.Alias, pm.Name = nil, proto.String(m.def.Name) // members go by name
					members = append(members, pm)
				}
			}
			p.Metrics = []*pb.Payload_Metric{sparkplug.TemplateInstance(cur.templateName(), cur.instAlias, p.Timestamp, false, members)}
			err = n.publish(n.topic(sparkplug.DDATA, cur.ID), p)
		} else {
			f.buf = sparkplug.AppendData(f.buf[:0], ms, seq, vals, historical)
			if err = n.publishBytes(n.topic(sparkplug.DDATA, cur.ID), seq, f.buf); err != nil {
				f.buf = nil // the client may still hold it
			}
		}
		if err == nil {
			n.e.sent.Add(uint64(len(vals)))
		}
		vals = vals[:0]
		return err
	}
	for _, s := range f.samples {
		m, ok := n.e.metricAt(s.Path)
		if !ok {
			n.log.Warn("buffered value of a tag no longer configured, skipped", "path", s.Path)
			continue
		}
		if m.dev != cur || len(vals) == maxMetricsPerMsg {
			if err := out(); err != nil {
				return 0, err
			}
			cur = m.dev
			if err := f.bornForData(cur); err != nil {
				return 0, err
			}
		}
		vals = append(vals, sparkplug.DataValue{Alias: m.alias, Type: sparkplug.WireType(m.def.DataType), Sample: s})
	}
	if err := out(); err != nil {
		return 0, err
	}
	return len(f.samples), nil
}

// bornForData makes sure that d's last word on the wire is a DBIRTH before
// data of it goes out. A device that came back has its birth queued before
// its values reach the buffer: the queued events go first. Values buffered
// while a device was up, sent while it is lost, go between one DBIRTH and
// one DDEATH: d is carried until the backlog is sent (carriedDeaths).
func (f *forwarder) bornForData(d *device) error {
	n := f.n
	// A death or birth queued before this value was buffered goes first.
	if err := n.events(); err != nil {
		return err
	}
	if n.isBorn(d) {
		return nil
	}
	wasBorn := n.devBorn[d] != 0
	if err := n.birthDevice(d, sparkplug.Millis(time.Now())); err != nil {
		return err
	}
	lost := n.e.isLost(d)
	if !wasBorn && lost && !slices.Contains(f.carried, d) {
		f.carried = append(f.carried, d)
	}
	return nil
}

// carriedDeaths sends the DDEATH of each device born only to carry its
// backlog, once the backlog is sent; one that came back meanwhile is alive
// and stays born.
func (f *forwarder) carriedDeaths() error {
	for _, d := range f.carried {
		if f.n.e.isLost(d) && f.n.isBorn(d) {
			if err := f.n.deviceDeath(d, time.Now()); err != nil {
				return err
			}
		}
	}
	f.carried = f.carried[:0]
	return nil
}

// receipt handles what the cloud says it has stored of this session.
func (n *node) receipt(ctx context.Context, r sparkplug.Receipt) error {
	if r.BdSeq != n.bdSeq || n.fw == nil {
		return nil // of an earlier session
	}
	seq, ok := n.seqOf[r.Count]
	if !ok {
		if r.Count > n.msgs {
			return fmt.Errorf("receipt for message %d, but only %d were sent", r.Count, n.msgs)
		}
		return nil // older than one already handled
	}
	if seq != r.Seq {
		// The cloud counted differently from what was sent: trust nothing
		// of this session and send again what has no receipt.
		return fmt.Errorf("receipt for message %d names seq %d, but it was sent with seq %d", r.Count, r.Seq, seq)
	}
	for k := range n.seqOf {
		if k <= r.Count {
			delete(n.seqOf, k)
		}
	}
	f := n.fw
	f.receipted = true
	var newest time.Time
	f.confirm(func(s sent) bool {
		if s.idx <= r.Count && s.at.After(newest) {
			newest = s.at
		}
		return s.idx <= r.Count
	})
	if !newest.IsZero() {
		n.receiptDelay.Store(int64(time.Since(newest)))
	}
	return f.trim(ctx)
}

// fallback covers a primary host that sends no receipts (not a Calx cloud):
// what was sent more than one and a half keepalives ago is taken as
// delivered; after a reconnect, what is younger is sent again.
func (f *forwarder) fallback(ctx context.Context) error {
	window := f.n.opts.KeepAlive * 3 / 2
	if f.receipted || time.Since(f.bornAt) < window {
		return nil
	}
	cut := time.Now().Add(-window)
	f.confirm(func(s sent) bool { return s.at.Before(cut) })
	return f.trim(ctx)
}

func (f *forwarder) confirm(covered func(sent) bool) {
	for _, l := range []*lane{f.backlog, f.live} {
		k := 0
		for k < len(l.pending) && covered(l.pending[k]) {
			l.confirmed = l.pending[k].seq
			k++
		}
		l.pending = l.pending[k:]
	}
}

// trim removes from the buffer what the cloud has stored: the backlog's
// confirmed part, and once the whole backlog is, the live lane's.
func (f *forwarder) trim(ctx context.Context) error {
	upTo := f.backlog.confirmed
	if f.backlog.done && len(f.backlog.pending) == 0 {
		upTo = max(upTo, f.live.confirmed)
	}
	if upTo <= f.purged {
		return nil
	}
	if err := f.n.e.buf.confirm(ctx, upTo); err != nil {
		return err
	}
	f.purged = upTo
	return nil
}
