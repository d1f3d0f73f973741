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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
)

// The transforms (calculated tags, production cycles, alarms) run in one
// goroutine that reads the UNS stream in order through the durable
// consumer "transform". Calculated values and the last cycle's values go
// back into the UNS stream as ordinary tags; finished cycles and alarm
// transitions go to the historian; alarms are published on MQTT and to
// live views.
//
// A restart resumes exactly: the engine's state is saved with the stream
// sequence it has seen up to, in the key-value bucket CALX_TRANSFORM,
// every few seconds, at an acknowledgement or shelving, and at a clean
// stop, but only after everything that sequence brought about has been
// written. After a crash the engine restores that state and reads the
// stream again from there; what it writes again is written idempotently
// (calculated values carry the input message's sequence as a message id,
// the historian keeps one value per (tag, ts), one cycle per start, one
// journal row per alarm, time and event).

const (
	consumerTransform = "transform"
	consumerCalcOld   = "calc" // the consumer of earlier versions
	bucketTransform   = "CALX_TRANSFORM"
	keyState          = "state"
	// subjectCalc carries calculated values in the UNS stream.
	subjectCalc = store.SubjectUNS + "._calc._calc"
	// subjectEvents carries, in a cluster, the cycles and alarm
	// transitions of the node that runs the transforms to every node's
	// historian and live views (events.go).
	subjectEvents = store.SubjectUNS + "._calc._events"
	// saveEvery is how often the engine's state is saved.
	saveEvery = 5 * time.Second
)

// savedState is what CALX_TRANSFORM keeps.
type savedState struct {
	Seq     uint64          `json:"seq"`     // the last UNS stream message applied
	Version uint64          `json:"version"` // of the fleet config the engine was built from
	Engine  json.RawMessage `json:"engine"`
}

// AlarmSink receives alarm transitions for live views.
type AlarmSink interface {
	Alarms(trs []transform.Transition)
}

type transformer struct {
	js    jetstream.JetStream
	fleet *Fleet
	reg   *Registry
	hist  *historian.Historian
	pub   Publisher
	live  AlarmSink
	log   *slog.Logger
	// events, in a cluster, sends what the transforms journal to the
	// other nodes (clusterjobs.go); nil alone.
	events func(ctx context.Context, id string, ev transformEvents) error
	// holds, in a cluster, says whether this node still runs the
	// transforms: a node that lost them saves no state over the new
	// holder's. Nil alone.
	holds func() bool

	kv jetstream.KeyValue

	// mu guards the engine and what goes with it; the loop holds it while
	// it applies a batch and writes what came of it.
	mu      sync.Mutex
	engine  *transform.Engine
	version uint64
	seq     uint64
	dirty   bool      // changed since the last save
	savedAt time.Time // of the last save
	// pending is a saved state not restored yet, because no fleet config
	// could be loaded: it is kept, and saved as it is, until one is.
	pending json.RawMessage
	// torn is set when the loop stopped with a message or tick applied to
	// the engine and not all of what it brought about written: that state
	// is never saved, so that the next start applies it again from the
	// last save.
	torn bool

	evaluated, failed, cycles, transitions atomic.Uint64

	cancel context.CancelFunc
	done   chan struct{}
}

func newTransformer(js jetstream.JetStream, f *Fleet, reg *Registry, h *historian.Historian, pub Publisher, live AlarmSink, log *slog.Logger) *transformer {
	e, _ := transform.NewEngine(nil)
	return &transformer{js: js, fleet: f, reg: reg, hist: h, pub: pub, live: live, log: log.With("component", "transform"),
		engine: e, done: make(chan struct{})}
}

func (t *transformer) start(ctx context.Context) error {
	kv, err := t.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketTransform, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("transform: state bucket: %w", err)
	}
	t.kv = kv
	var st savedState
	switch e, err := kv.Get(ctx, keyState); {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("transform: state: %w", err)
	default:
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return fmt.Errorf("transform: state: %w", err)
		}
	}
	t.pending = st.Engine
	if err := t.load(ctx); err != nil {
		t.log.Warn("transforms not loaded yet", "err", err)
	}
	stream, err := t.js.Stream(ctx, store.StreamUNS)
	if err != nil {
		return fmt.Errorf("transform: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("transform: %w", err)
	}
	t.seq = st.Seq
	if st.Engine == nil {
		t.seq = info.State.LastSeq // a first start: from now on
	} else if st.Seq+1 < info.State.FirstSeq {
		t.log.Error("the UNS stream no longer holds what the transforms had not read: they skip it",
			"from", st.Seq+1, "to", info.State.FirstSeq-1)
	}
	cons, err := t.consumer(ctx, t.seq)
	if err != nil {
		return err
	}
	t.dirty = true
	if err := t.save(ctx); err != nil {
		return err
	}
	// The loops live until stop, not as long as the start context: a
	// signal that ends it must not stop them before Shutdown drains.
	ctx, t.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(t.done)
		t.loop(ctx, cons)
	}()
	return nil
}

// consumer makes the transforms' consumer afresh, to deliver from the
// message after seq (the last one applied).
func (t *transformer) consumer(ctx context.Context, seq uint64) (jetstream.Consumer, error) {
	for _, name := range []string{consumerCalcOld, consumerTransform} {
		if err := t.js.DeleteConsumer(ctx, store.StreamUNS, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("transform: consumer %s: %w", name, err)
		}
	}
	cons, err := t.js.CreateConsumer(ctx, store.StreamUNS, jetstream.ConsumerConfig{
		Durable: consumerTransform, AckPolicy: jetstream.AckAllPolicy, AckWait: time.Minute, MaxAckPending: -1,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("transform: consumer: %w", err)
	}
	return cons, nil
}

func (t *transformer) stop() {
	if t.cancel == nil {
		return
	}
	t.cancel()
	<-t.done
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.save(context.Background()); err != nil {
		t.log.Warn("transform state not saved at stop; the next start reads the stream again from the last save", "err", err)
	}
}

// save stores the engine's state. The caller holds mu (or has the
// transformer to itself), and everything up to t.seq is written.
func (t *transformer) save(ctx context.Context) error {
	if !t.dirty || t.torn {
		return nil
	}
	if t.holds != nil && !t.holds() {
		return errors.New("transform: the transforms run on another node now: state not saved")
	}
	snap := t.pending
	if snap == nil {
		var err error
		if snap, err = t.engine.Snapshot(); err != nil {
			return fmt.Errorf("transform: state: %w", err)
		}
	}
	b, err := json.Marshal(savedState{Seq: t.seq, Version: t.version, Engine: snap})
	if err != nil {
		return fmt.Errorf("transform: state: %w", err)
	}
	if _, err := t.kv.Put(ctx, keyState, b); err != nil {
		return fmt.Errorf("transform: save state: %w", err)
	}
	t.savedAt, t.dirty = time.Now(), false
	return nil
}

// load builds the engine of the newest fleet config when it changed, with
// the state of the running engine (or the one saved, at start) carried
// over.
func (t *transformer) load(ctx context.Context) error {
	head, err := t.fleet.Head(ctx)
	if err != nil || head == 0 {
		return err // no fleet config yet: nothing to compute
	}
	t.mu.Lock()
	same := head == t.version && t.pending == nil
	t.mu.Unlock()
	if same {
		return nil
	}
	cfg, err := t.fleet.parsed(ctx, head)
	if err != nil {
		return err
	}
	e, err := transform.NewEngine(cfg.Transforms())
	if err != nil {
		t.log.Error("transforms left out", "version", head, "err", err)
	}
	e.SetReorder(transform.DefaultReorder)
	tags := e.OutputTags()
	for _, tag := range tags {
		t.reg.Define(tag)
	}
	if t.hist != nil && len(tags) > 0 {
		if err := t.hist.UpsertTags(ctx, tags); err != nil {
			return err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	restore := t.pending
	if restore == nil {
		if restore, err = t.engine.Snapshot(); err != nil {
			return fmt.Errorf("transform: state: %w", err)
		}
	}
	if err := e.Restore(restore); err != nil {
		t.log.Error("transform state not restored: the transforms start afresh", "err", err)
	}
	t.engine, t.version, t.dirty, t.pending = e, head, true, nil
	t.log.Info("transforms loaded", "version", head, "outputs", len(tags), "alarms", len(e.Alarms(time.Now())))
	return nil
}

func (t *transformer) loop(ctx context.Context, cons jetstream.Consumer) {
	var samples []uns.Sample
	var buf []byte
	lastLoad, lastTick := time.Now(), time.Now()
	l := store.Loop[struct{}]{Batch: 500, MaxWait: 200 * time.Millisecond, Log: t.log,
		Reset: func(ctx context.Context) (jetstream.Consumer, error) {
			t.mu.Lock()
			seq := t.seq
			t.mu.Unlock()
			return t.consumer(ctx, seq)
		},
		Round: func(ctx context.Context) error {
			if time.Since(lastLoad) > 2*time.Second {
				lastLoad = time.Now()
				if err := t.load(ctx); err != nil && ctx.Err() == nil {
					t.log.Warn("transforms not reloaded", "err", err)
				}
			}
			if time.Since(lastTick) < time.Second {
				return nil
			}
			lastTick = time.Now()
			t.mu.Lock()
			defer t.mu.Unlock()
			out := t.engine.Tick(lastTick)
			t.dirty = t.dirty || !out.Empty()
			if !t.emit(ctx, out, "") {
				t.torn = true
				return ctx.Err()
			}
			return nil
		},
		Take: func(ctx context.Context, msgs iter.Seq[jetstream.Msg]) (struct{}, error) {
			t.mu.Lock()
			defer t.mu.Unlock()
			for msg := range msgs {
				meta, err := msg.Metadata()
				if err != nil {
					continue
				}
				seq := meta.Sequence.Stream
				if seq <= t.seq {
					continue // applied before a restart
				}
				if subj := msg.Subject(); subj != subjectCalc && subj != subjectEvents {
					if samples, err = uns.DecodeBatchFunc(samples[:0], msg.Data(), t.engine.Reads); err == nil {
						if !t.process(ctx, samples, &buf, seq) {
							t.torn = true
							return struct{}{}, ctx.Err()
						}
					}
				}
				t.seq, t.dirty = seq, true
			}
			if t.dirty && time.Since(t.savedAt) >= saveEvery {
				if err := t.save(ctx); err != nil && ctx.Err() == nil {
					t.log.Warn("transform state not saved; trying again", "err", err)
				}
			}
			return struct{}{}, nil
		},
	}
	_ = l.Run(ctx, cons) // ends with ctx
}

// process runs a message's samples through the engine, publishes the
// calculated values (the input's sequence seq makes a replay idempotent)
// and stores what it emits. It returns false when ctx ended first. The
// caller holds mu.
func (t *transformer) process(ctx context.Context, samples []uns.Sample, buf *[]byte, seq uint64) bool {
	out := t.engine.Process(samples, time.Now())
	if len(out.Samples) > 0 {
		*buf = uns.AppendBatch((*buf)[:0], out.Samples)
		if !store.PublishUntilStored(ctx, t.js, subjectCalc, *buf, "calc-"+strconv.FormatUint(seq, 10), t.log) {
			return false
		}
		t.reg.Update(out.Samples)
		t.reg.SetReasons(out.Reasons)
	}
	return t.emit(ctx, out, "ev-"+strconv.FormatUint(seq, 10))
}

// emit writes cycles and transitions to the historian (trying until it
// works or ctx ends), sends them to the other nodes of a cluster (id, when
// set, makes a repeat stored once) and announces the transitions. The
// caller holds mu.
func (t *transformer) emit(ctx context.Context, out transform.Output, id string) bool {
	for _, err := range out.Errors {
		t.failed.Add(1)
		t.log.Debug("calculated tag failed", "err", err)
	}
	t.evaluated.Add(uint64(len(out.Samples)))
	ev := transformEvents{Cycles: out.Cycles, Transitions: out.Transitions}
	for len(out.Cycles) > 0 || len(out.Transitions) > 0 {
		err := t.hist.WriteCycles(ctx, out.Cycles)
		if err == nil {
			t.cycles.Add(uint64(len(out.Cycles)))
			out.Cycles = nil
			err = t.hist.WriteTransitions(ctx, out.Transitions)
		}
		if err == nil {
			break
		}
		t.log.Warn("cycles or alarm transitions not stored, trying again", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
	if t.events != nil && !ev.empty() {
		if err := t.events(ctx, id, ev); err != nil {
			return false
		}
	}
	t.announce(ev.Transitions)
	return true
}

// announce publishes alarm transitions: each alarm's state retained on
// uns/<device>/_alarms/<name>, and the transitions to live views. The
// caller holds mu.
func (t *transformer) announce(trs []transform.Transition) {
	if len(trs) == 0 {
		return
	}
	t.transitions.Add(uint64(len(trs)))
	now := time.Now()
	states := map[string]transform.AlarmStatus{}
	for _, a := range t.engine.Alarms(now) {
		states[a.Path] = a
	}
	for _, tr := range trs {
		st, ok := states[tr.Alarm]
		if !ok {
			continue
		}
		b, err := json.Marshal(alarmMessage{AlarmStatus: st, Last: tr})
		if err == nil {
			err = t.pub.Publish("uns/"+tr.Alarm, b, true, 1)
		}
		if err != nil {
			t.log.Warn("alarm not published on MQTT", "alarm", tr.Alarm, "err", err)
		}
	}
	if t.live != nil {
		t.live.Alarms(trs)
	}
}

// alarmMessage is an alarm's MQTT message: its state and its last
// transition.
type alarmMessage struct {
	transform.AlarmStatus
	Last transform.Transition `json:"last"`
}

// Alarms lists the alarms with their state.
func (t *transformer) Alarms() []transform.AlarmStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.engine.Alarms(time.Now())
}

// act applies an operator's action, journals it, announces it and saves
// the state before it answers.
func (t *transformer) act(ctx context.Context, do func(*transform.Engine, time.Time) (transform.Transition, error)) (transform.Transition, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	before, err := t.engine.Snapshot()
	if err != nil {
		return transform.Transition{}, fmt.Errorf("transform: state: %w", err)
	}
	tr, err := do(t.engine, time.Now().UTC())
	if err != nil {
		return tr, err
	}
	if err := t.hist.WriteTransitions(ctx, []transform.Transition{tr}); err != nil {
		// Not journaled: not done.
		if rerr := t.engine.Restore(before); rerr != nil {
			t.log.Error("alarm state not rolled back after a journal failure", "err", rerr)
		}
		return tr, err
	}
	if t.events != nil {
		// Journaled here: the other nodes' journals follow; the action
		// stands even when ctx ends before they have it.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := t.events(ectx, "", transformEvents{Transitions: []transform.Transition{tr}})
		cancel()
		if err != nil {
			t.log.Warn("alarm action not sent to the other nodes", "alarm", tr.Alarm, "err", err)
		}
	}
	t.announce([]transform.Transition{tr})
	t.dirty = true
	if err := t.save(ctx); err != nil {
		return tr, err
	}
	return tr, nil
}

// Alarms lists the alarms of the transforms with their state, in path
// order. In a cluster a node that does not run the transforms asks the one
// that does.
func (c *Cloud) Alarms(ctx context.Context) ([]transform.AlarmStatus, error) {
	if t := c.transform.Load(); t != nil {
		return t.Alarms(), nil
	}
	if c.opts.Cluster == nil {
		return nil, nil
	}
	var out []transform.AlarmStatus
	err := c.askTransforms(ctx, transformCall{Op: "alarms"}, &out)
	return out, err
}

// AckAlarm acknowledges an alarm for user; it answers once the
// acknowledgement is journaled and saved. An unknown alarm is
// transform.ErrNoAlarm; one that needs no acknowledgement another error.
func (c *Cloud) AckAlarm(ctx context.Context, path, user, comment string) (transform.Transition, error) {
	if t := c.transform.Load(); t != nil || c.opts.Cluster == nil {
		return c.actLocal(ctx, t, transformCall{Op: "ack", Path: path, User: user, Comment: comment})
	}
	var tr transform.Transition
	err := c.askTransforms(ctx, transformCall{Op: "ack", Path: path, User: user, Comment: comment}, &tr)
	return tr, err
}

// ShelveAlarm shelves an alarm until until, or unshelves it when until is
// not in the future.
func (c *Cloud) ShelveAlarm(ctx context.Context, path string, until time.Time, user, comment string) (transform.Transition, error) {
	call := transformCall{Op: "shelve", Path: path, Until: until, User: user, Comment: comment}
	if t := c.transform.Load(); t != nil || c.opts.Cluster == nil {
		return c.actLocal(ctx, t, call)
	}
	var tr transform.Transition
	err := c.askTransforms(ctx, call, &tr)
	return tr, err
}

// actLocal applies an operator's action to this node's transforms.
func (c *Cloud) actLocal(ctx context.Context, t *transformer, call transformCall) (transform.Transition, error) {
	if t == nil {
		return transform.Transition{}, ErrNoTransforms
	}
	return t.act(ctx, func(e *transform.Engine, now time.Time) (transform.Transition, error) {
		if call.Op == "shelve" {
			return e.Shelve(call.Path, now, call.Until, call.User, call.Comment)
		}
		return e.Ack(call.Path, now, call.User, call.Comment)
	})
}

// TransformStats are the transforms' counters.
type TransformStats struct {
	Outputs, Failed, Cycles, Transitions uint64
	// Late counts values older than what their device's transforms had
	// processed: left out by those with state.
	Late uint64
}

// TransformStats returns the transforms' counters.
func (c *Cloud) TransformStats() TransformStats {
	t := c.transform.Load()
	if t == nil {
		return TransformStats{}
	}
	t.mu.Lock()
	late := t.engine.Late()
	t.mu.Unlock()
	return TransformStats{Outputs: t.evaluated.Load(), Failed: t.failed.Load(), Cycles: t.cycles.Load(), Transitions: t.transitions.Load(), Late: late}
}
