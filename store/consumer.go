package store

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ResumeConsumer creates the durable pull consumer cfg on stream, or opens
// it again, so that it goes on from its acknowledgement floor.
//
// Calx consumers acknowledge a whole fetched batch with one AckAll. Messages
// that were delivered before a stop or a crash but never acknowledged would
// otherwise wait out the ack wait for redelivery, and the first AckAll of
// the next run, for later messages, would cover them: they would never be
// processed. So when a consumer is found with deliveries above its ack floor,
// it is made again to deliver from the message after the floor. What was
// already processed comes again; the consumers' ends are idempotent.
func ResumeConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := js.Consumer(ctx, stream, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons, err = js.CreateConsumer(ctx, stream, cfg)
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
		}
		return cons, nil
	case err != nil:
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	info := cons.CachedInfo()
	if info.Delivered.Stream <= info.AckFloor.Stream {
		// Nothing in flight: keep the position, take the rest of cfg.
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = info.Config.DeliverPolicy, info.Config.OptStartSeq, info.Config.OptStartTime
		cons, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
		}
		return cons, nil
	}
	if err := js.DeleteConsumer(ctx, stream, cfg.Durable); err != nil {
		return nil, fmt.Errorf("consumer %s on %s: reset to ack floor %d: %w", cfg.Durable, stream, info.AckFloor.Stream, err)
	}
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, info.AckFloor.Stream+1, nil
	cons, err = js.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: resume at %d: %w", cfg.Durable, stream, info.AckFloor.Stream+1, err)
	}
	return cons, nil
}

// Loop drives a durable pull consumer: it fetches batches, hands each to
// Take, and acknowledges a batch (one AckAll on its last message) only
// once its work is done. The host, the archiver and the transforms each
// run one.
type Loop[T any] struct {
	Batch   int           // messages per fetch
	MaxWait time.Duration // how long a fetch waits for them
	Log     *slog.Logger
	// Round, when set, runs before every fetch (timers, reloads); an
	// error stops the loop.
	Round func(ctx context.Context) error
	// Take handles a fetched batch, never empty, ranging over all of its
	// messages. An error stops the loop with the batch unacknowledged:
	// it comes again.
	Take func(ctx context.Context, msgs iter.Seq[jetstream.Msg]) (T, error)
	// Finish, when set, completes taken batches in order on a goroutine
	// of its own while the next batches are fetched and taken (at most
	// Depth wait); a batch is acknowledged once Finish returned nil. An
	// error stops the loop, and neither that batch nor any after it is
	// acknowledged. Without Finish a batch is acknowledged once taken.
	Finish func(ctx context.Context, work T) error
	Depth  int
	// Linger, when set, is how long a consumer that keeps up waits after
	// the first message for more to come with it: fewer, larger batches
	// for an end that pays for each (a commit), at the cost of that much
	// latency.
	Linger time.Duration
	// Reset, when set, makes the consumer again from its acknowledgement
	// floor (ResumeConsumer). The loop calls it when a delivery was lost
	// on the way (the consumer's delivery sequence skips one, as when a
	// cluster node that led the consumer is cut off with a batch in
	// flight): an AckAll of what came after would cover the lost message
	// unprocessed.
	Reset func(ctx context.Context) (jetstream.Consumer, error)
}

// Run runs the loop until ctx ends or Take, Round or Finish fail, and
// returns that failure (nil when ctx ended). Work in hand is finished
// first: a clean stop leaves nothing taken unacknowledged.
func (l *Loop[T]) Run(ctx context.Context, cons jetstream.Consumer) error {
	if l.Finish == nil {
		return l.fetch(ctx, cons, func(_ T, last jetstream.Msg) { l.ack(last) })
	}
	type taken struct {
		work T
		last jetstream.Msg
	}
	queue := make(chan taken, max(l.Depth, 1))
	// Fetching stops when Finish fails: nothing after that is acknowledged.
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var ferr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for tk := range queue {
			if ferr != nil {
				continue // not acknowledged: it comes again
			}
			if err := l.Finish(ctx, tk.work); err != nil {
				ferr = err
				stop()
				continue
			}
			l.ack(tk.last)
		}
	}()
	err := l.fetch(fctx, cons, func(w T, last jetstream.Msg) { queue <- taken{w, last} })
	close(queue)
	<-finished
	if ferr != nil {
		return ferr
	}
	return err
}

// fetch takes batches until ctx ends or Round or Take fail, handing each
// taken batch's work and last message to done.
//
// A consumer that keeps up waits for the next message alone and then
// takes at once whatever else is there, so that a message waits for one
// round trip, not for a batch to fill or MaxWait to pass; a consumer that
// is behind (its last fetch came back full) takes full batches back to
// back, the larger batches the ends write fastest.
func (l *Loop[T]) fetch(ctx context.Context, cons jetstream.Consumer, done func(T, jetstream.Msg)) error {
	behind := false
	var delivered uint64 // the consumer's delivery sequence of the last message taken
	for ctx.Err() == nil {
		if l.Round != nil {
			if err := l.Round(ctx); err != nil {
				return err
			}
		}
		var batches []jetstream.MessageBatch
		var err error
		if behind {
			var b jetstream.MessageBatch
			if b, err = cons.FetchNoWait(l.Batch); err == nil {
				batches = append(batches, b)
			}
		} else {
			var first jetstream.MessageBatch
			if first, err = cons.Fetch(1, jetstream.FetchMaxWait(l.MaxWait)); err == nil {
				batches = append(batches, first)
				if l.Linger > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(l.Linger):
					}
				}
				// The first message is in hand: a failed fetch of the rest
				// must not drop it (a later acknowledgement, of all up to
				// its message, would cover it unprocessed).
				if l.Batch > 1 {
					if rest, rerr := cons.FetchNoWait(l.Batch - 1); rerr == nil {
						batches = append(batches, rest)
					} else if ctx.Err() == nil {
						l.Log.Warn("fetch failed", "err", rerr)
					}
				}
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				l.Log.Warn("fetch failed", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
			continue
		}
		n, failed, gap, err := l.take(ctx, batches, &delivered, done)
		if err != nil {
			return err
		}
		behind = n == l.Batch
		if gap && l.Reset != nil {
			l.Log.Warn("a delivery was lost on the way: reading again from the consumer's acknowledgement floor", "after", delivered)
			for ctx.Err() == nil {
				next, rerr := l.Reset(ctx)
				if rerr == nil {
					cons, delivered, behind = next, 0, false
					break
				}
				l.Log.Warn("consumer not made again; trying again", "err", rerr)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		if failed && n == 0 {
			// The backbone answered with an error (no consumer leader, in
			// a cluster electing one): ask again in a moment, not at once.
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// take hands the messages of batches, in order, to Take as one batch and
// its work and last message to done; it returns how many messages Take saw,
// and whether a batch ended with an error.
func (l *Loop[T]) take(ctx context.Context, batches []jetstream.MessageBatch, delivered *uint64, done func(T, jetstream.Msg)) (int, bool, bool, error) {
	gap := false
	msgs := func(yield func(jetstream.Msg) bool) {
		for _, b := range batches {
			for m := range b.Messages() {
				if meta, err := m.Metadata(); err == nil {
					if seq := meta.Sequence.Consumer; *delivered != 0 && seq > *delivered+1 {
						gap = true // this one and the rest come again after the reset
						return
					} else {
						*delivered = seq
					}
				}
				if !yield(m) {
					return
				}
			}
		}
	}
	next, stop := iter.Pull(msgs)
	defer stop()
	first, ok := next()
	var work T
	var last jetstream.Msg
	n := 0
	var err error
	if ok {
		// Take sees the messages as they arrive; last is the one it saw
		// last, so an early stop acknowledges nothing it did not see.
		work, err = l.Take(ctx, func(yield func(jetstream.Msg) bool) {
			last, n = first, 1
			if !yield(first) {
				return
			}
			for {
				m, ok := next()
				if !ok {
					return
				}
				last, n = m, n+1
				if !yield(m) {
					return
				}
			}
		})
	}
	failed := false
	for _, b := range batches {
		for range b.Messages() { // what Take left comes again
		}
		if berr := b.Error(); berr != nil && !errors.Is(berr, jetstream.ErrNoMessages) && ctx.Err() == nil {
			failed = true
			l.Log.Warn("fetch batch ended with error", "err", berr)
		}
	}
	if err != nil {
		return n, failed, gap, err
	}
	if last != nil {
		done(work, last)
	}
	return n, failed, gap, nil
}

func (l *Loop[T]) ack(last jetstream.Msg) {
	if err := last.Ack(); err != nil {
		l.Log.Warn("ack failed", "err", err)
	}
}

// PublishUntilStored publishes data on subj, with id as its message id
// (so that a repeat is stored once), until the backbone stored it. An
// attempt under way finishes; it gives up between attempts when ctx
// ended, and then returns false.
func PublishUntilStored(ctx context.Context, js jetstream.JetStream, subj string, data []byte, id string, log *slog.Logger) bool {
	return PublishMsgUntilStored(ctx, js, &nats.Msg{Subject: subj, Data: data}, id, log)
}

// PublishMsgUntilStored is PublishUntilStored of a message with headers.
func PublishMsgUntilStored(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, id string, log *slog.Logger) bool {
	for {
		_, err := js.PublishMsg(context.WithoutCancel(ctx), msg, jetstream.WithMsgID(id))
		if err == nil {
			return true
		}
		if InProcess(err) {
			// In a cluster another node published the same message a
			// moment ago: it is stored, or the next try stores it.
			log.Debug("publish of a message another node is storing; trying again", "subject", msg.Subject)
		} else {
			log.Warn("publish not stored, trying again", "subject", msg.Subject, "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// InProcess says whether err is the backbone's answer to a publish whose
// message id another publish, not finished yet, carries (in a cluster,
// every node's primary host publishes the same values).
func InProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10158
}
