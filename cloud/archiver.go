package cloud

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// SampleWriter stores batches of samples durably and idempotently.
type SampleWriter interface {
	WriteBatch(ctx context.Context, samples []uns.Sample) error
}

const consumerHistorian = "historian"

// archiver is the durable consumer that writes the UNS stream into the
// historian. It acks a batch of messages only after the historian committed
// their samples, so a crash at any point redelivers, never loses.
type archiver struct {
	js      jetstream.JetStream
	w       SampleWriter
	log     *slog.Logger
	metrics *Metrics

	written, batches, malformed atomic.Uint64
	lastLatency                 atomic.Int64 // ns, sample time to commit, of the last batch's newest sample

	cfg    jetstream.ConsumerConfig
	cancel context.CancelFunc
	done   chan struct{}
}

func newArchiver(js jetstream.JetStream, w SampleWriter, m *Metrics, log *slog.Logger) *archiver {
	return &archiver{js: js, w: w, metrics: m, log: log.With("component", "archiver"), done: make(chan struct{})}
}

func (a *archiver) start(ctx context.Context) error {
	a.cfg = jetstream.ConsumerConfig{
		Durable: consumerHistorian, AckPolicy: jetstream.AckAllPolicy, AckWait: 2 * time.Minute,
		MaxAckPending: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	cons, err := store.ResumeConsumer(ctx, a.js, store.StreamUNS, a.cfg)
	if err != nil {
		return fmt.Errorf("archiver: consumer: %w", err)
	}
	// The loops live until stop, not as long as the start context: a
	// signal that ends it must not stop them before Shutdown drains.
	ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(a.done)
		a.loop(ctx, cons)
	}()
	return nil
}

// stop finishes the batch in hand and returns.
func (a *archiver) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
}

// loop fetches and decodes the next batch while the historian writes the
// one before, and acks each batch once it is committed, in order. It
// returns when ctx is done and every batch fetched is written.
func (a *archiver) loop(ctx context.Context, cons jetstream.Consumer) {
	free := make(chan []uns.Sample, 2) // two batches' slices take turns
	free <- nil
	free <- nil
	l := store.Loop[[]uns.Sample]{Batch: 1000, MaxWait: 100 * time.Millisecond, Linger: 20 * time.Millisecond, Log: a.log, Depth: 1,
		Reset: func(ctx context.Context) (jetstream.Consumer, error) {
			return store.ResumeConsumer(ctx, a.js, store.StreamUNS, a.cfg)
		},
		Take: func(ctx context.Context, msgs iter.Seq[jetstream.Msg]) ([]uns.Sample, error) {
			var samples []uns.Sample
			select {
			case samples = <-free:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return a.decode(ctx, samples, msgs)
		},
		Finish: func(ctx context.Context, samples []uns.Sample) error {
			if err := a.write(ctx, samples); err != nil {
				return err
			}
			clear(samples)
			free <- samples[:0]
			return nil
		},
	}
	_ = l.Run(ctx, cons) // ends with ctx
}

// decode appends the samples of a batch's messages; a malformed one is
// counted and skipped. The cycles and alarm transitions that another node's
// transforms journaled are written as they come (idempotently); it fails
// only when ctx ends before they are.
func (a *archiver) decode(ctx context.Context, samples []uns.Sample, msgs iter.Seq[jetstream.Msg]) ([]uns.Sample, error) {
	for msg := range msgs {
		var err error
		if msg.Subject() == subjectEvents {
			if err := a.events(ctx, msg.Data()); err != nil {
				return samples, err
			}
			continue
		}
		n := len(samples)
		samples, err = uns.DecodeBatch(samples, msg.Data())
		if err != nil {
			samples = samples[:n]
			a.malformed.Add(1)
			a.log.Error("malformed UNS batch skipped", "subject", msg.Subject(), "err", err)
		}
	}
	return samples, nil
}

// EventWriter keeps what the transforms journal.
type EventWriter interface {
	WriteCycles(ctx context.Context, cycles []uns.Cycle) error
	WriteTransitions(ctx context.Context, trs []uns.Transition) error
}

// events writes a node's journaled cycles and transitions, trying until
// they are written or ctx ends.
func (a *archiver) events(ctx context.Context, data []byte) error {
	ev, err := decodeEvents(data)
	ew, ok := a.w.(EventWriter)
	if err != nil || !ok {
		a.malformed.Add(1)
		a.log.Error("transform events skipped", "err", err)
		return nil
	}
	for {
		err := ew.WriteCycles(context.WithoutCancel(ctx), ev.Cycles)
		if err == nil {
			if err = ew.WriteTransitions(context.WithoutCancel(ctx), ev.Transitions); err == nil {
				return nil
			}
		}
		a.log.Error("transform events not written, retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// write commits a batch. The write is not cut short by shutdown: the
// batch in hand is committed (and then acked), so a clean stop leaves
// nothing to redeliver; only a failing write gives up when ctx ends.
func (a *archiver) write(ctx context.Context, samples []uns.Sample) error {
	for {
		began := time.Now()
		err := a.w.WriteBatch(context.WithoutCancel(ctx), samples)
		if err == nil {
			took := time.Since(began)
			if took > 250*time.Millisecond {
				a.log.Debug("slow historian commit", "values", len(samples), "took", took.Round(time.Millisecond))
			}
			a.metrics.HistorianWrite.Observe(took.Seconds())
			a.metrics.HistorianBatch.Observe(float64(len(samples)))
			break
		}
		a.log.Error("historian write failed, retrying", "samples", len(samples), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	now := time.Now()
	var newest time.Time
	for i := range samples {
		if samples[i].Historical {
			continue
		}
		a.metrics.SampleDelay.Observe(now.Sub(samples[i].TS).Seconds())
		if samples[i].TS.After(newest) {
			newest = samples[i].TS
		}
	}
	if !newest.IsZero() {
		a.lastLatency.Store(int64(now.Sub(newest)))
	}
	a.written.Add(uint64(len(samples)))
	a.batches.Add(1)
	return nil
}
