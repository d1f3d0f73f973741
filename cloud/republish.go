package cloud

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

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

func newRepublisher(nc *nats.Conn, reg *Registry, pub Publisher, interval time.Duration, log *slog.Logger) (*republisher, error) {
	r := &republisher{reg: reg, pub: pub, log: log.With("component", "uns-mqtt"), interval: interval, done: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	if interval <= 0 {
		close(r.done)
		var samples []uns.Sample
		sub, err := nc.Subscribe(store.SubjectUNS+".>", func(m *nats.Msg) {
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
	r.buf = appendUNSJSON(r.buf[:0], s, tag)
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

// appendUNSJSON appends the UNS JSON of a value:
// {"value":1101.5,"ts":"2026-11-24T10:00:00Z","quality":"good","unit":"°C"}.
func appendUNSJSON(b []byte, s uns.Sample, tag TagState) []byte {
	b = append(b, `{"value":`...)
	v := s.Value
	switch {
	case tag.DataType == uns.TypeBool && (v.Kind == uns.KindInt || v.Kind == uns.KindBool), v.Kind == uns.KindBool:
		b = strconv.AppendBool(b, v.I != 0)
	case v.Kind == uns.KindInt:
		b = strconv.AppendInt(b, v.I, 10)
	case v.Kind == uns.KindFloat:
		b = appendJSONFloat(b, v.F)
	case v.Kind == uns.KindString:
		b = appendJSONString(b, v.S)
	default:
		b = append(b, "null"...)
	}
	b = append(b, `,"ts":"`...)
	b = s.TS.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","quality":"`...)
	b = append(b, s.Quality.String()...)
	b = append(b, '"')
	if tag.Unit != "" {
		b = append(b, `,"unit":`...)
		b = appendJSONString(b, tag.Unit)
	}
	return append(b, '}')
}

// appendJSONFloat writes f as a JSON number in the shortest form that reads
// back the same; NaN and infinities, which JSON cannot carry, as null.
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		b = strconv.AppendFloat(b, f, 'e', -1, 64)
		// e-07 as e-7, as JavaScript writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
		return b
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// appendJSONString writes s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		q, _ := json.Marshal(s) // replaces the invalid bytes
		return append(b, q...)
	}
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
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
