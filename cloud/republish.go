package cloud

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// DefaultUNSInterval is how often at most a tag's retained UNS JSON is
// updated unless configured otherwise.
const DefaultUNSInterval = time.Second

// republisher puts the current value of every tag on the cloud broker as
// UNS JSON, retained, on uns/<path>, for MQTT consumers (dashboards, MES,
// other platforms). It is a current-state view, off the durable path,
// taken from the registry: a tag whose value changed goes out within a
// tick (a tenth of a second at most), and while it changes faster than the
// interval, only its newest value goes out, once per interval (the values
// in between are counted as conflated; the historian has them all). An
// interval of 0 publishes every value, from the backbone.
type republisher struct {
	sub      *nats.Subscription // interval 0 only
	reg      *Registry
	pub      Publisher
	log      *slog.Logger
	interval time.Duration

	buf    []byte
	states []TagState

	sent, conflated atomic.Uint64
	done            chan struct{}
	stop            context.CancelFunc
}

// repubTick is how often the republisher looks for changed values.
const repubTick = 100 * time.Millisecond

func newRepublisher(nc *nats.Conn, node string, reg *Registry, pub Publisher, interval time.Duration, log *slog.Logger) (*republisher, error) {
	r := &republisher{reg: reg, pub: pub, log: log.With("component", "uns-mqtt"), interval: interval, done: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	if interval <= 0 {
		close(r.done)
		var samples []uns.Sample
		sub, err := nc.Subscribe(store.SubjectUNS+".>", func(m *nats.Msg) {
			if otherNode(m, node) {
				return // this node's host publishes the same values
			}
			var err error
			samples, err = uns.DecodeBatch(samples[:0], m.Data)
			if err != nil {
				return
			}
			r.take(samples)
		})
		if err != nil {
			return nil, fmt.Errorf("uns republish: %w", err)
		}
		if err := sub.SetPendingLimits(100000, 256<<20); err != nil {
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("uns republish: %w", err)
		}
		r.sub = sub
		return r, nil
	}
	reg.Watch(interval, min(interval, repubTick))
	go func() {
		defer close(r.done)
		t := time.NewTicker(min(interval, repubTick))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				r.flush(now)
			}
		}
	}()
	return r, nil
}

// take publishes every current value among samples (interval 0).
func (r *republisher) take(samples []uns.Sample) {
	for _, s := range samples {
		if s.Historical {
			continue // late values are history, not the current state
		}
		tag, _ := r.reg.Get(s.Path)
		r.publish(s, tag)
	}
}

// flush publishes the changed values of tags not published within the
// interval.
func (r *republisher) flush(now time.Time) {
	var conflated uint64
	r.states, conflated = r.reg.TakeDue(r.states[:0], now)
	r.conflated.Store(conflated)
	for i := range r.states {
		ts := &r.states[i]
		r.publish(uns.Sample{Path: ts.Path, Value: ts.Value, TS: ts.TS, Quality: ts.Quality}, *ts)
	}
	clear(r.states)
}

// retainedPublisher is a Publisher that can keep a retained message
// without looking for subscribers when there can be none (Broker).
type retainedPublisher interface {
	PublishRetained(topic string, payload []byte) error
}

func (r *republisher) publish(s uns.Sample, tag TagState) {
	r.buf = uns.AppendPayloadJSON(r.buf[:0], s, tag.Unit, tag.DataType)
	// The broker keeps the payload (retained): it gets its own copy.
	var err error
	if rp, ok := r.pub.(retainedPublisher); ok {
		err = rp.PublishRetained("uns/"+string(s.Path), bytes.Clone(r.buf))
	} else {
		err = r.pub.Publish("uns/"+string(s.Path), bytes.Clone(r.buf), true, 0)
	}
	if err != nil {
		r.log.Warn("UNS publish failed", "path", s.Path, "err", err)
		return
	}
	r.sent.Add(1)
}

// RepublishStats are the UNS values put on the broker as JSON, those a
// newer value of the same tag replaced before they went out, and the
// backbone messages the republisher was too slow to take.
func (c *Cloud) RepublishStats() (sent, conflated, dropped uint64) {
	if c.repub == nil {
		return 0, 0, 0
	}
	if c.repub.sub != nil {
		if n, err := c.repub.sub.Dropped(); err == nil && n > 0 {
			dropped = uint64(n)
		}
	}
	return c.repub.sent.Load(), c.repub.conflated.Load(), dropped
}

func (r *republisher) close() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
	r.stop()
	<-r.done
}
