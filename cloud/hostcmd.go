package cloud

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Commands of the host: writes (DCMD/NCMD) and rebirth requests.

func (h *Host) askRebirth(ns *nodeState, why string, live bool) {
	if !live || time.Since(ns.lastRebirth) < rebirthInterval {
		return
	}
	ns.lastRebirth = time.Now()
	if why != rebirthRequested && !h.acting() {
		return // another node of the cluster asks
	}
	m := &pb.Payload_Metric{Name: proto.String(sparkplug.MetricRebirth), Timestamp: proto.Uint64(sparkplug.Millis(time.Now()))}
	if mi, ok := ns.metrics.byName[sparkplug.MetricRebirth]; ok {
		m = commandMetric(mi, sparkplug.MetricRebirth, ns.calx)
	} else if !ns.calx {
		m.Datatype = proto.Uint32(uint32(pb.DataType_Boolean))
	}
	m.Value = &pb.Payload_Metric_BooleanValue{BooleanValue: true}
	p := &pb.Payload{Timestamp: proto.Uint64(sparkplug.Millis(time.Now())), Metrics: []*pb.Payload_Metric{m}}
	b, _ := proto.Marshal(p)
	topic := sparkplug.Topic{Group: ns.Group, Type: sparkplug.NCMD, Edge: ns.Edge}.String()
	if err := h.pub.Publish(topic, b, false, 0); err != nil {
		h.log.Warn("rebirth request failed", "topic", topic, "err", err)
		return
	}
	h.rebirths.Add(1)
	h.log.Info("rebirth requested", "node", ns.Group+"/"+ns.Edge, "reason", why)
}

// Write sends a command (DCMD, or NCMD for a node metric) that sets a
// writable tag, by metric name, with the datatype of its birth.
func (h *Host) Write(path uns.Path, v uns.Value) error {
	tag, ok := h.reg.Get(path)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownPath, path)
	}
	if !tag.Writable {
		return fmt.Errorf("%w: %s", ErrReadOnly, path)
	}
	if err := tag.CheckWrite(v); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	a := tag.Sparkplug
	h.mu.RLock()
	ns := h.nodes[a.Group+"/"+a.Edge]
	var mi *metricInfo
	online := ns != nil && ns.Online
	calx := ns != nil && ns.calx
	if online {
		set := ns.metrics
		if a.Device != "" {
			ds, ok := ns.devices[a.Device]
			online = ok && ds.online
			if ok {
				set = ds.metrics
			}
		}
		mi = set.byName[a.Metric]
	}
	h.mu.RUnlock()
	if !online || mi == nil {
		return fmt.Errorf("%w: %s", ErrWriteTarget, path)
	}
	m := commandMetric(mi, a.Metric, calx)
	sparkplug.SetValue(m, mi.dt, v)
	b, err := proto.Marshal(&pb.Payload{Timestamp: proto.Uint64(sparkplug.Millis(time.Now())), Metrics: []*pb.Payload_Metric{m}})
	if err != nil {
		return err
	}
	t := sparkplug.Topic{Group: a.Group, Type: sparkplug.NCMD, Edge: a.Edge}
	if a.Device != "" {
		t.Type, t.Device = sparkplug.DCMD, a.Device
	}
	if err := h.pub.Publish(t.String(), b, false, 0); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// commandMetric addresses a metric in an NCMD or DCMD as Sparkplug says:
// by its alias alone when its birth gave it one, else by name; with a
// timestamp, and without a datatype for a Calx edge. Other nodes get the
// datatype, which Sparkplug says should be left out, because Eclipse
// Tahu's decoder, which many edge nodes are built on, cannot read a value
// without it (docs/SPARKPLUG.md).
func commandMetric(mi *metricInfo, name string, calx bool) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Timestamp: proto.Uint64(sparkplug.Millis(time.Now()))}
	if !calx {
		m.Datatype = proto.Uint32(uint32(mi.dt))
	}
	if mi.hasAlias && !mi.member {
		m.Alias = proto.Uint64(mi.alias)
	} else {
		m.Name = proto.String(name)
	}
	return m
}

// rebirthRequested is the reason of a rebirth a user asked for.
const rebirthRequested = "requested"

// ErrUnknownPath is returned for a path that is not in the namespace.
var ErrUnknownPath = errors.New("no such tag in the namespace")

// RequestRebirth asks an edge node for a rebirth (NCMD Node Control/Rebirth),
// as the host does by itself on a sequence gap or an unknown alias.
func (h *Host) RequestRebirth(group, edge string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ns, ok := h.nodes[group+"/"+edge]
	if !ok {
		return fmt.Errorf("unknown edge node %s/%s", group, edge)
	}
	ns.lastRebirth = time.Time{}
	h.askRebirth(ns, rebirthRequested, true)
	return nil
}
