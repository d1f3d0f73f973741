package cloud

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// republisher puts every current value on the cloud broker as UNS JSON,
// retained, on uns/<path>, for MQTT consumers (dashboards, MES, other
// platforms). Like the live view it is off the durable path: the broker
// may drop updates for a slow subscriber (counted by mochi), the
// historian never loses them.
type republisher struct {
	sub  *nats.Subscription
	reg  *Registry
	pub  Publisher
	log  *slog.Logger
	sent atomic.Uint64
}

// unsPayload is the UNS JSON of one value.
type unsPayload struct {
	Value   any    `json:"value"`
	TS      string `json:"ts"`
	Quality string `json:"quality"`
	Unit    string `json:"unit,omitempty"`
}

func newRepublisher(nc *nats.Conn, reg *Registry, pub Publisher, log *slog.Logger) (*republisher, error) {
	r := &republisher{reg: reg, pub: pub, log: log.With("component", "uns-mqtt")}
	sub, err := nc.Subscribe(store.SubjectUNS+".>", func(m *nats.Msg) {
		samples, err := uns.DecodeBatch(nil, m.Data)
		if err != nil {
			return
		}
		r.publish(samples)
	})
	if err != nil {
		return nil, fmt.Errorf("uns republish: %w", err)
	}
	if err := sub.SetPendingLimits(100000, 256<<20); err != nil {
		return nil, fmt.Errorf("uns republish: %w", err)
	}
	r.sub = sub
	return r, nil
}

func (r *republisher) publish(samples []uns.Sample) {
	for _, s := range samples {
		if s.Historical {
			continue // late values are history, not the current state
		}
		tag, _ := r.reg.Get(s.Path)
		v := s.Value.Any()
		if tag.DataType == uns.TypeBool && s.Value.Kind == uns.KindInt {
			v = s.Value.I != 0
		}
		b, err := json.Marshal(unsPayload{Value: v, TS: s.TS.UTC().Format(time.RFC3339Nano), Quality: s.Quality.String(), Unit: tag.Unit})
		if err == nil {
			err = r.pub.Publish("uns/"+string(s.Path), b, true, 0)
		}
		if err != nil {
			r.log.Warn("UNS publish failed", "path", s.Path, "err", err)
			continue
		}
		r.sent.Add(1)
	}
}

// RepublishStats are the UNS values put on the broker as JSON, and the
// backbone messages the republisher was too slow to take.
func (c *Cloud) RepublishStats() (sent, dropped uint64) {
	if c.repub == nil {
		return 0, 0
	}
	if n, err := c.repub.sub.Dropped(); err == nil && n > 0 {
		dropped = uint64(n)
	}
	return c.repub.sent.Load(), dropped
}

func (r *republisher) close() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
}
