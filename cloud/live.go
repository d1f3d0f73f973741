package cloud

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
)

// Hub fans new UNS samples out to live views (browsers). It is not on the
// durable path: a view that cannot keep up loses updates, which are counted,
// and it can always reload current values from the namespace.
type Hub struct {
	log *slog.Logger
	sub *nats.Subscription

	mu   sync.Mutex
	subs map[*LiveSub]struct{}

	dropped, malformed atomic.Uint64
}

// LiveSub is one live view's feed: values on C, alarm transitions on
// Alarms.
type LiveSub struct {
	C       chan []uns.Sample
	Alarms  chan []transform.Transition
	dropped atomic.Uint64
}

// Dropped counts the updates this view lost by being slow.
func (s *LiveSub) Dropped() uint64 { return s.dropped.Load() }

func newHub(nc *nats.Conn, log *slog.Logger) (*Hub, error) {
	h := &Hub{log: log.With("component", "live"), subs: map[*LiveSub]struct{}{}}
	sub, err := nc.Subscribe(store.SubjectUNS+".>", func(m *nats.Msg) {
		samples, err := uns.DecodeBatch(nil, m.Data)
		if err != nil {
			h.malformed.Add(1)
			return
		}
		h.broadcast(samples)
	})
	if err != nil {
		return nil, fmt.Errorf("live: subscribe: %w", err)
	}
	if err := sub.SetPendingLimits(100000, 256<<20); err != nil {
		return nil, fmt.Errorf("live: %w", err)
	}
	h.sub = sub
	return h, nil
}

func (h *Hub) broadcast(samples []uns.Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.C <- samples:
		default:
			s.dropped.Add(uint64(len(samples)))
			h.dropped.Add(uint64(len(samples)))
		}
	}
}

// Alarms fans alarm transitions out to live views; a view too slow for
// them loses them (counted), and reloads the alarm list.
func (h *Hub) Alarms(trs []transform.Transition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.Alarms <- trs:
		default:
			s.dropped.Add(uint64(len(trs)))
			h.dropped.Add(uint64(len(trs)))
		}
	}
}

// Subscribe returns a new feed; call Unsubscribe when done.
func (h *Hub) Subscribe() *LiveSub {
	s := &LiveSub{C: make(chan []uns.Sample, 256), Alarms: make(chan []transform.Transition, 64)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Unsubscribe removes a feed.
func (h *Hub) Unsubscribe(s *LiveSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// Dropped counts updates lost by slow views, in samples.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// BusDropped counts the backbone messages the hub itself was too slow to
// take.
func (h *Hub) BusDropped() uint64 {
	if h.sub == nil {
		return 0
	}
	n, _ := h.sub.Dropped()
	return uint64(max(n, 0))
}

func (h *Hub) close() {
	if h.sub != nil {
		_ = h.sub.Unsubscribe()
	}
}
