package cloud

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	// What the feeds follow, kept as they come and go: every path, or the
	// paths under these prefixes.
	all      bool
	prefixes [][]byte

	dropped, malformed atomic.Uint64

	// announced are the alarm transitions told lately (alarm, time and
	// event): in a cluster the node that takes the transforms over
	// replays the last seconds, and what it journals again is told once.
	amu       sync.Mutex
	announced map[transitionKey]time.Time
}

type transitionKey struct {
	alarm, event string
	ts           int64
}

// announcedFor is how long a told transition is remembered.
const announcedFor = 10 * time.Minute

// fresh keeps the transitions not told before, and remembers them.
func (h *Hub) fresh(trs []transform.Transition) []transform.Transition {
	h.amu.Lock()
	defer h.amu.Unlock()
	now := time.Now()
	if h.announced == nil || len(h.announced) > 100000 {
		h.announced = map[transitionKey]time.Time{}
	}
	for k, at := range h.announced {
		if now.Sub(at) > announcedFor {
			delete(h.announced, k)
		}
	}
	var out []transform.Transition
	for _, tr := range trs {
		k := transitionKey{tr.Alarm, tr.Event, tr.TS.UnixNano()}
		if _, told := h.announced[k]; told {
			continue
		}
		h.announced[k] = now
		out = append(out, tr)
	}
	return out
}

// LiveSub is one live view's feed: values on C, alarm transitions on
// Alarms, of the paths under its prefixes (all without any).
type LiveSub struct {
	C        chan []uns.Sample
	Alarms   chan []transform.Transition
	prefixes []string
	dropped  atomic.Uint64
}

// wants says whether a UNS path is under one of the feed's prefixes.
func (s *LiveSub) wants(p string) bool {
	if len(s.prefixes) == 0 {
		return true
	}
	for _, pre := range s.prefixes {
		if p == pre || strings.HasPrefix(p, pre) && p[len(pre)] == '/' {
			return true
		}
	}
	return false
}

// filter returns the items the feed wants: all of them (not copied) or a
// copy of the wanted ones.
func filter[T any](s *LiveSub, items []T, path func(*T) string) []T {
	if len(s.prefixes) == 0 {
		return items
	}
	var out []T
	for i := range items {
		if s.wants(path(&items[i])) {
			out = append(out, items[i])
		}
	}
	return out
}

// offer hands a feed its part of items without waiting: a feed that is full
// loses it, counted.
func offer[T any](h *Hub, items []T, ch func(*LiveSub) chan []T, path func(*T) string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		part := filter(s, items, path)
		if len(part) == 0 {
			continue
		}
		select {
		case ch(s) <- part:
		default:
			s.dropped.Add(uint64(len(part)))
			h.dropped.Add(uint64(len(part)))
		}
	}
}

// Dropped counts the updates this view lost by being slow.
func (s *LiveSub) Dropped() uint64 { return s.dropped.Load() }

// newHub follows the UNS stream's subjects; node is this node's name: the
// alarm transitions another node's transforms journal (in a cluster) come
// through the backbone, this node's straight from its transforms.
func newHub(nc *nats.Conn, node string, log *slog.Logger) (*Hub, error) {
	h := &Hub{log: log.With("component", "live"), subs: map[*LiveSub]struct{}{}}
	sub, err := nc.Subscribe(store.SubjectUNS+".>", func(m *nats.Msg) {
		keep, watched := h.keeper()
		if !watched {
			return // nobody to tell
		}
		if otherNode(m, node) {
			return // this node's host publishes the same values
		}
		if m.Subject == subjectEvents {
			if ev, err := decodeEvents(m.Data); err != nil {
				h.malformed.Add(1)
			} else if ev.Node != node && len(ev.Transitions) > 0 {
				h.Alarms(ev.Transitions)
			}
			return
		}
		samples, err := uns.DecodeBatchFunc(nil, m.Data, keep)
		if err != nil {
			h.malformed.Add(1)
			return
		}
		if len(samples) > 0 {
			h.broadcast(samples)
		}
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
	offer(h, samples, func(s *LiveSub) chan []uns.Sample { return s.C }, func(s *uns.Sample) string { return string(s.Path) })
}

// Alarms fans alarm transitions out to live views, each once; a view too
// slow for them loses them (counted), and reloads the alarm list.
func (h *Hub) Alarms(trs []transform.Transition) {
	if trs = h.fresh(trs); len(trs) == 0 {
		return
	}
	offer(h, trs, func(s *LiveSub) chan []transform.Transition { return s.Alarms },
		func(t *transform.Transition) string { return t.Alarm })
}

// keeper says whether any feed is open, and which paths the feeds follow:
// keep is nil when one follows every path. Batches are decoded through it,
// so that values nobody follows are not copied.
func (h *Hub) keeper() (keep func(path []byte) bool, watched bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return nil, false
	}
	if h.all {
		return nil, true
	}
	prefixes := h.prefixes // replaced, never changed, when feeds come and go
	return func(p []byte) bool {
		for _, pre := range prefixes {
			if bytes.HasPrefix(p, pre) && (len(p) == len(pre) || p[len(pre)] == '/') {
				return true
			}
		}
		return false
	}, true
}

// followed recomputes what the feeds follow; the caller holds mu.
func (h *Hub) followed() {
	h.all, h.prefixes = false, nil
	for s := range h.subs {
		if len(s.prefixes) == 0 {
			h.all = true
		}
		for _, p := range s.prefixes {
			h.prefixes = append(h.prefixes, []byte(p))
		}
	}
}

// Subscribe returns a new feed of the paths under prefixes (every path
// without any); call Unsubscribe when done.
func (h *Hub) Subscribe(prefixes ...string) *LiveSub {
	s := &LiveSub{C: make(chan []uns.Sample, 256), Alarms: make(chan []transform.Transition, 64), prefixes: prefixes}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.followed()
	h.mu.Unlock()
	return s
}

// Unsubscribe removes a feed.
func (h *Hub) Unsubscribe(s *LiveSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.followed()
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
