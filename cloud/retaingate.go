package cloud

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The UNS JSON republisher updates a retained message per tag, up to once
// a second each: 100,000 tags make 100,000 publishes a second. A publish
// through the broker also looks for subscribers in its topic tree, which
// costs as much again as keeping the retained message, and usually no
// one follows uns/ live (a consumer subscribes, reads the retained values
// and stays, or comes back later). retainGate lets such a publish only
// store the retained message while no subscription can match it.
//
// Correctness rests on one lock: a publish checks for subscribers and
// stores under it, and a new subscription is noted under it after the
// broker added it to its tree and before the broker sends it the retained
// messages. So a value either was stored before the subscriber read the
// retained messages (it gets the value then), or is published to the
// subscription live.
type retainGate struct {
	srv     *mqtt.Server
	recheck time.Duration // gateRecheck; tests shorten it

	mu      sync.Mutex
	maybe   bool      // a subscription that may match uns/ exists, or did when checked
	checked time.Time // when the clients' subscriptions were last looked at

	stored atomic.Uint64 // retained messages stored without a look for subscribers
}

// gateRecheck is how often, while a subscription to uns/ may exist, the
// clients' subscriptions are looked at again.
const gateRecheck = time.Second

// matchesUNS reports whether a topic filter can match a topic under uns/.
func matchesUNS(filter string) bool {
	if len(filter) > len(mqtt.SharePrefix) && strings.EqualFold(filter[:len(mqtt.SharePrefix)], mqtt.SharePrefix) {
		// $share/<group>/<filter>
		_, rest, ok := strings.Cut(filter[len(mqtt.SharePrefix)+1:], "/")
		if !ok {
			return false
		}
		filter = rest
	}
	first, _, _ := strings.Cut(filter, "/")
	return first == "uns" || first == "+" || first == "#"
}

// anySubscriber looks at every client's subscriptions (sessions kept for
// disconnected clients included). The cloud's own inline subscriptions are
// not looked at: none of them follows uns/. The caller holds mu.
func (g *retainGate) anySubscriber() bool {
	for _, cl := range g.srv.Clients.GetAll() {
		for f := range cl.State.Subscriptions.GetAll() {
			if matchesUNS(f) {
				return true
			}
		}
	}
	return false
}

// publish stores the retained message of topic (under uns/), and
// publishes it to the subscribers if there may be any.
func (g *retainGate) publish(topic string, payload []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maybe && time.Since(g.checked) >= g.recheck {
		g.maybe, g.checked = g.anySubscriber(), time.Now()
	}
	if g.maybe {
		return g.srv.Publish(topic, payload, true, 0)
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Retain: true},
		TopicName:       topic,
		Payload:         payload,
		Origin:          mqtt.InlineClientId,
		Created:         time.Now().Unix(),
		ProtocolVersion: 4,
	}
	g.srv.Topics.RetainMessage(pk)
	atomic.StoreInt64(&g.srv.Info.Retained, int64(g.srv.Topics.Retained.Len()))
	g.stored.Add(1)
	return nil
}

// retainGateHook notes new subscriptions for the gate.
type retainGateHook struct {
	mqtt.HookBase
	g *retainGate
}

func (h *retainGateHook) ID() string { return "calx-retain-gate" }

func (h *retainGateHook) Provides(b byte) bool { return b == mqtt.OnSubscribed }

// OnSubscribed runs after the broker added the subscriptions to its tree
// and before it sends their retained messages.
func (h *retainGateHook) OnSubscribed(_ *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] < packets.ErrUnspecifiedError.Code && matchesUNS(f.Filter) {
			h.g.mu.Lock()
			h.g.maybe, h.g.checked = true, time.Now()
			h.g.mu.Unlock()
			return
		}
	}
}
