package cloud

import (
	"context"
	"time"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Applying a Sparkplug message to the node's state: births, data,
// deaths, sequence numbers, and the samples they make.

// apply runs one Sparkplug message through the host's state and returns the
// samples it carries. live is false while restoring births; will marks an
// NDEATH the broker sent for a lost connection. For data messages, refs (if
// not nil) is set to the samples' tags in the registry.
func (h *Host) apply(ctx context.Context, t sparkplug.Topic, p *pb.Payload, at time.Time, live, will bool, refs *[]*TagState) []uns.Sample {
	key := nodeKey(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	ns := h.nodes[key]
	if ns != nil {
		ns.LastSeen = at
	}
	switch t.Type {
	case sparkplug.NBIRTH:
		bd, _ := metricUint(p, sparkplug.MetricBdSeq)
		ns = &nodeState{NodeState: NodeState{Group: t.Group, Edge: t.Edge, Online: true, BdSeq: bd, LastSeen: at, BirthAt: at},
			lastSeq: int(p.GetSeq()), metrics: newMetricSet(), devices: map[string]*deviceState{}}
		if old := h.nodes[key]; old != nil {
			ns.lastRebirth, ns.Malformed, ns.SeqGaps, ns.lastBadLog = old.lastRebirth, old.Malformed, old.SeqGaps, old.lastBadLog
			for id := range old.devices {
				ns.Devices = append(ns.Devices, id)
			}
		}
		h.nodes[key] = ns
		for _, m := range p.GetMetrics() {
			ns.calx = ns.calx || m.GetName() == sparkplug.MetricCalxVersion
		}
		if live {
			ns.skew(at, p)
		}
		samples, kept := h.birth(ctx, ns, t, p, ns.metrics)
		if live {
			h.storeBirth(ctx, t, kept)
		}
		return samples
	case sparkplug.DBIRTH:
		if ns == nil {
			h.unknownNode(t, live)
			return nil
		}
		h.checkSeq(ns, t, p, live)
		ds := &deviceState{online: true, metrics: newMetricSet()}
		if _, had := ns.devices[t.Device]; !had {
			ns.Devices = append(ns.Devices, t.Device)
		}
		ns.devices[t.Device] = ds
		samples, kept := h.birth(ctx, ns, t, p, ds.metrics)
		if live {
			h.storeBirth(ctx, t, kept)
		}
		return samples
	case sparkplug.NDATA, sparkplug.DDATA:
		if ns == nil || !ns.Online {
			h.unknownNode(t, live)
			return nil
		}
		h.checkSeq(ns, t, p, live)
		set := ns.metrics
		if t.Type == sparkplug.NDATA && live {
			ns.skew(at, p)
		}
		if t.Type == sparkplug.DDATA {
			ns.LastData = at
			ns.Values += uint64(len(p.GetMetrics()))
			ds, ok := ns.devices[t.Device]
			if !ok {
				h.askRebirth(ns, "data from a device without birth", live)
				return nil
			}
			set = ds.metrics
		}
		out, tags := h.data(ns, t, p, set, live)
		if refs != nil {
			*refs = tags
		}
		return out
	case sparkplug.NDEATH:
		if ns == nil {
			return nil
		}
		if bd, ok := metricUint(p, sparkplug.MetricBdSeq); ok && bd != ns.BdSeq {
			h.staleDeaths.Add(1)
			return nil
		}
		ns.Online = false
		ns.DeathReason = "stopped: the edge sent its NDEATH"
		if will {
			ns.DeathReason = "connection lost: the broker sent the edge's Will"
		}
		var out []uns.Sample
		out = appendStale(out, ns.metrics, at)
		for _, ds := range ns.devices {
			ds.online = false
			out = appendStale(out, ds.metrics, at)
		}
		return out
	case sparkplug.DDEATH:
		if ns == nil {
			return nil
		}
		h.checkSeq(ns, t, p, live)
		ds, ok := ns.devices[t.Device]
		if !ok {
			return nil
		}
		ds.online = false
		if ts := p.GetTimestamp(); ts > 0 {
			at = sparkplug.Timestamp(ts)
		}
		return appendStale(nil, ds.metrics, at)
	}
	return nil
}

// skew records the clock skew from a node message sent as it was made
// (NBIRTH, NDATA: never backlog): receipt time minus its timestamp.
func (ns *nodeState) skew(at time.Time, p *pb.Payload) {
	if ts := p.GetTimestamp(); ts > 0 {
		ns.ClockSkewMs = at.UnixMilli() - int64(ts)
	}
}

func appendStale(out []uns.Sample, set metricSet, at time.Time) []uns.Sample {
	for _, mi := range set.byName {
		if mi.store {
			out = append(out, uns.Sample{Path: mi.path, TS: at, Value: uns.Null, Quality: uns.Bad})
		}
	}
	return out
}

// checkSeq verifies the node's message sequence and asks for a rebirth on a
// gap, as values in between were lost on the way.
func (h *Host) checkSeq(ns *nodeState, t sparkplug.Topic, p *pb.Payload, live bool) {
	if p.Seq == nil {
		return
	}
	seq := int(p.GetSeq())
	if ns.lastSeq >= 0 && seq != (ns.lastSeq+1)%256 {
		h.gaps.Add(1)
		ns.SeqGaps++
		h.log.Warn("sequence gap", "node", nodeKey(t), "want", (ns.lastSeq+1)%256, "got", seq)
		if live && ns.gapAt.IsZero() {
			ns.gapAt = time.Now()
		}
	}
	ns.lastSeq = seq
}

func (h *Host) unknownNode(t sparkplug.Topic, live bool) {
	h.unknown.Add(1)
	ns := &nodeState{NodeState: NodeState{Group: t.Group, Edge: t.Edge}, lastSeq: -1, metrics: newMetricSet(), devices: map[string]*deviceState{}}
	if old := h.nodes[nodeKey(t)]; old != nil {
		ns = old
	} else {
		h.nodes[nodeKey(t)] = ns
	}
	h.askRebirth(ns, "data before birth", live)
}

func (h *Host) data(ns *nodeState, t sparkplug.Topic, p *pb.Payload, set metricSet, live bool) ([]uns.Sample, []*TagState) {
	out := make([]uns.Sample, 0, len(p.GetMetrics()))
	tags := make([]*TagState, 0, len(p.GetMetrics()))
	for _, m := range p.GetMetrics() {
		mi, ok := set.lookup(m)
		if !ok {
			h.unknown.Add(1)
			h.askRebirth(ns, "unknown metric alias", live)
			continue
		}
		out, tags = h.collect(ns, p, set, m, mi, out, tags)
	}
	return out, tags
}

// collect adds the samples of one data metric, and their tags in the
// registry; a template instance's members are found by name under their
// instance.
func (h *Host) collect(ns *nodeState, p *pb.Payload, set metricSet, m *pb.Payload_Metric, mi *metricInfo, out []uns.Sample, tags []*TagState) ([]uns.Sample, []*TagState) {
	if mi.dt == pb.DataType_Template {
		for _, member := range m.GetTemplateValue().GetMetrics() {
			if mm, ok := set.byName[mi.name+"/"+member.GetName()]; ok {
				if member.Timestamp == nil {
					member.Timestamp = m.Timestamp
				}
				out, tags = h.collect(ns, p, set, member, mm, out, tags)
			}
		}
		return out, tags
	}
	if !mi.store {
		return out, tags
	}
	if s, ok := h.sample(p, m, mi); ok {
		out = append(out, s)
		tags = append(tags, mi.tag)
	}
	return out, tags
}

func (h *Host) sample(p *pb.Payload, m *pb.Payload_Metric, mi *metricInfo) (uns.Sample, bool) {
	s, err := sparkplug.MetricSample(p, m, mi.dt, mi.path)
	if err != nil {
		h.malformed.Add(1)
		return uns.Sample{}, false
	}
	return s, true
}

func metricUint(p *pb.Payload, name string) (uint64, bool) {
	for _, m := range p.GetMetrics() {
		if m.GetName() != name {
			continue
		}
		switch v := m.Value.(type) {
		case *pb.Payload_Metric_LongValue:
			return v.LongValue, true
		case *pb.Payload_Metric_IntValue:
			return uint64(v.IntValue), true
		}
	}
	return 0, false
}
