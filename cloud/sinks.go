package cloud

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// Sinks: far ends that get every value of the UNS stream besides the
// historian, such as the plant's PostgreSQL (docs/INTEGRATIONS.md). Each
// is a durable consumer of its own (sink_<name>): a batch is acknowledged
// once the far end committed it, so a far end that is down keeps its
// backlog in the backbone (within the stream's retention) and gets it when
// it is back, and a batch written twice after a restart is written
// idempotently there.

// Sink is a far end of the UNS stream.
type Sink struct {
	Name   string
	Writer SampleWriter
}

// SinkStats are the counters of one sink.
type SinkStats struct {
	Name      string `json:"name"`
	Written   uint64 `json:"written"`
	Failures  uint64 `json:"failures"`
	LastError string `json:"last_error,omitempty"`
	Running   bool   `json:"running"` // on this node (in a cluster, one node runs each sink)
	// Behind is how many backbone messages of values the sink has still
	// to write (its consumer's backlog); -1: not known now.
	Behind int64 `json:"behind"`
}

// sinkRunner feeds one sink.
type sinkRunner struct {
	sink Sink
	js   jetstream.JetStream
	log  *slog.Logger
	cfg  jetstream.ConsumerConfig

	written, failures atomic.Uint64
	running           atomic.Bool
	mu                sync.Mutex
	lastErr           string
}

func sinkConsumer(name string) string { return "sink_" + name }

func newSinkRunner(s Sink, js jetstream.JetStream, log *slog.Logger) *sinkRunner {
	return &sinkRunner{sink: s, js: js, log: log.With("component", "sink", "sink", s.Name),
		cfg: jetstream.ConsumerConfig{Durable: sinkConsumer(s.Name), AckPolicy: jetstream.AckAllPolicy, AckWait: 5 * time.Minute,
			MaxAckPending: -1, DeliverPolicy: jetstream.DeliverAllPolicy}}
}

func (r *sinkRunner) stats() SinkStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return SinkStats{Name: r.sink.Name, Written: r.written.Load(), Failures: r.failures.Load(), LastError: r.lastErr, Running: r.running.Load()}
}

// run feeds the sink until ctx ends.
func (r *sinkRunner) run(ctx context.Context) {
	r.running.Store(true)
	defer r.running.Store(false)
	for ctx.Err() == nil {
		cons, err := store.ResumeConsumer(ctx, r.js, store.StreamUNS, r.cfg)
		if err == nil {
			l := store.Loop[[]uns.Sample]{Batch: 2000, MaxWait: 200 * time.Millisecond, Linger: 50 * time.Millisecond, Log: r.log, Depth: 1,
				Reset: func(ctx context.Context) (jetstream.Consumer, error) {
					return store.ResumeConsumer(ctx, r.js, store.StreamUNS, r.cfg)
				},
				Take:   r.decode,
				Finish: r.write,
			}
			err = l.Run(ctx, cons)
		}
		if err != nil && ctx.Err() == nil {
			r.log.Error("sink stopped; starting again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

func (r *sinkRunner) decode(_ context.Context, msgs iter.Seq[jetstream.Msg]) ([]uns.Sample, error) {
	var samples []uns.Sample
	for msg := range msgs {
		if msg.Subject() == subjectEvents {
			continue // cycles and alarm transitions: the historian's
		}
		n := len(samples)
		var err error
		if samples, err = uns.DecodeBatch(samples, msg.Data()); err != nil {
			samples = samples[:n]
			r.log.Error("malformed UNS batch skipped", "subject", msg.Subject(), "err", err)
		}
	}
	return samples, nil
}

// write commits a batch at the far end, trying again with a growing pause
// (up to 30 s) while it fails; only ctx's end gives up.
func (r *sinkRunner) write(ctx context.Context, samples []uns.Sample) error {
	wait := time.Second
	for {
		// A far end that hangs (a lock held by someone else) does not hold
		// the batch, nor a shutdown, for longer than two minutes a try.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		err := r.sink.Writer.WriteBatch(wctx, samples)
		cancel()
		if err == nil {
			r.written.Add(uint64(len(samples)))
			r.mu.Lock()
			r.lastErr = ""
			r.mu.Unlock()
			return nil
		}
		r.failures.Add(1)
		r.mu.Lock()
		first := r.lastErr == ""
		r.lastErr = err.Error()
		r.mu.Unlock()
		if first {
			r.log.Error("sink write failed; the backlog stays in the backbone, trying again", "samples", len(samples), "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// SinkStats lists the sinks' counters.
func (c *Cloud) SinkStats() []SinkStats {
	out := make([]SinkStats, 0, len(c.sinks))
	for _, r := range c.sinks {
		out = append(out, r.stats())
	}
	return out
}

// SinkStatus lists the sinks' counters with each one's backlog in the
// backbone.
func (c *Cloud) SinkStatus(ctx context.Context) []SinkStats {
	out := c.SinkStats()
	for i := range out {
		out[i].Behind = -1
		cons, err := c.Bus.JetStream().Consumer(ctx, store.StreamUNS, sinkConsumer(out[i].Name))
		if err != nil {
			continue
		}
		if info, err := cons.Info(ctx); err == nil {
			out[i].Behind = int64(info.NumPending) + int64(info.NumAckPending)
		}
	}
	return out
}

func (c *Cloud) startSinks(context.Context) error {
	for _, s := range c.opts.Sinks {
		js, err := c.jetStream("calx-sink-" + s.Name)
		if err != nil {
			return err
		}
		r := newSinkRunner(s, js, c.log)
		c.sinks = append(c.sinks, r)
		if c.jobs != nil { // one node of a cluster feeds each sink
			c.sinkJobs = append(c.sinkJobs, c.runJob("sink-"+s.Name, r.run))
		} else {
			c.sinkJobs = append(c.sinkJobs, goJob(r.run))
		}
	}
	return nil
}

func (c *Cloud) stopSinks(context.Context) error {
	for _, j := range c.sinkJobs {
		j.stop()
	}
	return nil
}

var sinkNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// validSinks checks the sinks' names: one each, usable as a consumer's.
func validSinks(sinks []Sink) error {
	seen := map[string]bool{}
	for _, s := range sinks {
		if !sinkNameRe.MatchString(s.Name) || s.Writer == nil {
			return fmt.Errorf("cloud: sink %q: a name of lower-case letters, digits, - and _ (up to 32), and a far end", s.Name)
		}
		if seen[s.Name] {
			return fmt.Errorf("cloud: sink %q twice", s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}
