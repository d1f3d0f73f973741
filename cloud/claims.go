package cloud

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/fleet"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Claims is what the fleet config says of the namespace: which edge node
// (group/edge_id) a UNS path is given to, and how many tags a node's births
// may define.
type Claims interface {
	PathOwner(p uns.Path) (node string, ok bool)
	MaxTags(node string) int
}

// birthScope is what one birth may still claim, and what it was refused.
type birthScope struct {
	node    string
	budget  int // tags it may still define
	foreign []uns.Path
	overCap int
	refused map[string]bool // top-level metrics with a refused tag, by name
}

// newScope is the scope of a birth of t: a node's birth starts the node's
// tags afresh, a device's counts the node's other tags against the cap.
func (h *Host) newScope(ns *nodeState, t sparkplug.Topic) *birthScope {
	sc := &birthScope{node: nodeKey(t), refused: map[string]bool{}}
	sc.budget = h.maxTags(sc.node)
	if t.Type == sparkplug.DBIRTH {
		sc.budget -= ns.metrics.stored()
		for id, ds := range ns.devices {
			if id != t.Device {
				sc.budget -= ds.metrics.stored()
			}
		}
	}
	return sc
}

func (s metricSet) stored() int {
	n := 0
	for _, mi := range s.byName {
		if mi.store {
			n++
		}
	}
	return n
}

// claim says whether the birth in sc may define the tag at p. A path the
// fleet config gives to an edge node is that node's alone; any other path
// stays with the node that defined it first (calculated tags with the
// cloud), so that no edge can rebind another's tag. Past the node's tag
// cap nothing more is defined.
func (h *Host) claim(sc *birthScope, t sparkplug.Topic, p uns.Path, top string) bool {
	owner, assigned := "", false
	if h.opts.Claims != nil {
		owner, assigned = h.opts.Claims.PathOwner(p)
	}
	mine := owner == sc.node
	if !assigned {
		cur, ok := h.reg.Get(p)
		a := cur.Sparkplug
		// A path of a node the host has forgotten is free again; one of
		// the cloud's own (no Sparkplug address) never is.
		_, held := h.nodes[a.Group+"/"+a.Edge]
		mine = !ok || (a.Group == t.Group && a.Edge == t.Edge) || (a.Group != "" && !held)
	}
	if !mine {
		h.foreign.Add(1)
		sc.foreign = append(sc.foreign, p)
		sc.refused[top] = true
		return false
	}
	if sc.budget <= 0 {
		h.overCap.Add(1)
		sc.overCap++
		sc.refused[top] = true
		return false
	}
	sc.budget--
	return true
}

// report logs what a birth was refused.
func (h *Host) report(sc *birthScope, t sparkplug.Topic) {
	if len(sc.foreign) > 0 {
		h.log.Warn("birth refused: its metrics name UNS paths of another edge node", "topic", t.String(), "refused", len(sc.foreign), "first", sc.foreign[0])
	}
	if sc.overCap > 0 {
		h.log.Warn("birth refused: the edge node's tag cap is reached", "topic", t.String(), "refused", sc.overCap, "max_tags", h.maxTags(sc.node))
	}
}

func (h *Host) maxTags(node string) int {
	if h.opts.Claims != nil {
		return h.opts.Claims.MaxTags(node)
	}
	return fleet.DefaultMaxTags
}

// allowedBirth is the birth as it is kept for a restart: without the
// metrics whose tags were refused, so that a replay cannot grant them.
func allowedBirth(p *pb.Payload, sc *birthScope) *pb.Payload {
	if len(sc.refused) == 0 {
		return p
	}
	out := proto.Clone(p).(*pb.Payload)
	out.Metrics = out.Metrics[:0]
	for _, m := range p.GetMetrics() {
		if !sc.refused[m.GetName()] {
			out.Metrics = append(out.Metrics, m)
		}
	}
	return out
}

// knows says whether the host has state of an edge node.
func (h *Host) knows(group, edge string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, ok := h.nodes[group+"/"+edge]
	return ok
}

// Forget drops an edge node: its state and its stored births, so that it
// is not restored at a restart and the UNS paths it defined may be
// defined by another node. Its tags and their history stay.
func (h *Host) Forget(ctx context.Context, group, edge string) error {
	h.mu.Lock()
	delete(h.nodes, group+"/"+edge)
	h.mu.Unlock()
	lister, err := h.kv.ListKeysFiltered(ctx, store.Token(group)+"."+store.Token(edge)+".>")
	if err != nil {
		return fmt.Errorf("host: forget %s/%s: %w", group, edge, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := h.kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("host: forget %s/%s: %w", group, edge, err)
		}
	}
	h.log.Info("edge node forgotten", "node", group+"/"+edge, "births", len(keys))
	return nil
}
