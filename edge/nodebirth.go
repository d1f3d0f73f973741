package edge

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// The edge node's births and deaths: NBIRTH, DBIRTH (as metrics or a
// template instance), DDEATH, and the device events that call for them.

// birth publishes NBIRTH with seq 0 and a DBIRTH for every device. Values
// still queued from before are older than the birth and go as historical.
func (n *node) birth(ctx context.Context) error {
	now := time.Now()
	ms := sparkplug.Millis(now)
	n.seq = 0
	bdSeq, rebirth := sparkplug.BdSeqMetric(n.bdSeq, ms), sparkplug.RebirthMetric(ms)
	bdSeq.Alias, rebirth.Alias = proto.Uint64(aliasBdSeq), proto.Uint64(aliasRebirth)
	nb := &pb.Payload{Timestamp: proto.Uint64(ms), Seq: n.nextSeq(), Metrics: []*pb.Payload_Metric{bdSeq, rebirth,
		{Name: proto.String(sparkplug.MetricCalxVersion), Alias: proto.Uint64(aliasVersion), Timestamp: proto.Uint64(ms), Datatype: proto.Uint32(uint32(pb.DataType_String)),
			Value: &pb.Payload_Metric_StringValue{StringValue: n.opts.Version}},
	}}
	n.sentNode = map[uint64]string{}
	for _, m := range n.nodeMetrics(ms) {
		n.sentNode[m.GetAlias()] = metricKey(m)
		m.Name = proto.String(n.nodeMetricName(m.GetAlias()))
		m.Datatype = proto.Uint32(uint32(nodeMetricType(m)))
		nb.Metrics = append(nb.Metrics, m)
	}
	if n.opts.SparkplugTemplates {
		nb.Metrics = append(nb.Metrics, n.e.templateDefinitions(ms)...)
	}
	if err := n.publish(n.topic(sparkplug.NBIRTH, ""), nb); err != nil {
		return err
	}
	n.devBorn = map[*device]uint64{}
	devices := n.e.deviceList()
	for _, d := range devices {
		if n.e.isLost(d) {
			continue // born again when it comes back
		}
		if err := n.birthDevice(d, ms); err != nil {
			return err
		}
	}
	n.born.Store(true)
	// Device events from before this birth are answered by it.
	n.e.takeEvents()
	if n.fw == nil {
		fw, err := newForwarder(ctx, n)
		if err != nil {
			return err
		}
		n.fw = fw
	}
	n.log.Info("edge node born", "bdSeq", n.bdSeq, "devices", len(devices), "backlog_msgs", n.fw.backlogMsgs())
	return nil
}

// birthDevice publishes a DBIRTH of d with every metric it has now.
func (n *node) birthDevice(d *device, ms uint64) error {
	p, gen := n.deviceBirth(d, ms)
	if err := n.publish(n.topic(sparkplug.DBIRTH, d.ID), p); err != nil {
		return err
	}
	n.devBorn[d] = gen + 1
	return nil
}

// isBorn reports whether d's last word on the wire is a DBIRTH with all
// of its metrics.
func (n *node) isBorn(d *device) bool {
	return n.devBorn[d] == n.e.generation(d)+1
}

func (n *node) deviceBirth(d *device, ms uint64) (*pb.Payload, uint64) {
	p := &pb.Payload{Timestamp: proto.Uint64(ms), Seq: n.nextSeq()}
	var gen uint64
	p.Metrics, gen = n.e.birthMetrics(d, ms)
	sparkplug.SortByTime(p.Metrics)
	if n.opts.SparkplugTemplates {
		// One template instance: the metrics become its members, by name.
		for _, pm := range p.Metrics {
			pm.Alias = nil
		}
		p.Metrics = []*pb.Payload_Metric{sparkplug.TemplateInstance(d.templateName(), d.instAlias, proto.Uint64(ms), true, p.Metrics)}
	}
	return p, gen
}

// birthMetrics returns d's DBIRTH metrics with their current values, and
// the device's generation they belong to.
func (e *Edge) birthMetrics(d *device, ms uint64) ([]*pb.Payload_Metric, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*pb.Payload_Metric, 0, len(d.metrics))
	for _, m := range d.metrics {
		out = append(out, sparkplug.BirthMetric(m.birthDef(), uns.Sample{TS: m.current.TS, Value: m.current.Value, Quality: m.current.Quality}, m.hasCur, ms))
	}
	return out, d.gen
}

// isLost reports whether d cannot be reached now.
func (e *Edge) isLost(d *device) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return d.lost
}

// generation is d's generation: it grows when its metrics change.
func (e *Edge) generation(d *device) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return d.gen
}

// takeEvents returns the device deaths and births queued for the node,
// and empties the queue.
func (e *Edge) takeEvents() []event {
	e.mu.Lock()
	defer e.mu.Unlock()
	evs := slices.Clone(e.events)
	e.events = e.events[:0]
	return evs
}

// birthDef is what m's DBIRTH metric says of it.
func (m *metric) birthDef() sparkplug.TagDef {
	d := &m.def
	return sparkplug.TagDef{Name: d.Name, Alias: m.alias, Path: m.path, DataType: d.DataType, Unit: d.Unit,
		Low: d.Low, High: d.High, AlarmLow: d.AlarmLow, AlarmHigh: d.AlarmHigh, Description: d.Description,
		Writable: d.Writable, WriteMin: d.WriteMin, WriteMax: d.WriteMax}
}

// templateName is the device's machine type: its template, or its id.
func (d *device) templateName() string {
	if d.Template != "" {
		return d.Template
	}
	return d.ID
}

// templateDefinitions returns one Template definition per machine type of
// the devices, its members the metrics of the first device of that type.
func (e *Edge) templateDefinitions(ms uint64) []*pb.Payload_Metric {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*pb.Payload_Metric
	seen := map[string]bool{}
	for _, d := range e.devices {
		name := d.templateName()
		if d.retired || seen[name] {
			continue
		}
		seen[name] = true
		var members []*pb.Payload_Metric
		for _, m := range d.metrics {
			pm := &pb.Payload_Metric{Name: proto.String(m.def.Name), Timestamp: proto.Uint64(ms),
				Datatype: proto.Uint32(uint32(sparkplug.WireType(m.def.DataType))), IsNull: proto.Bool(true)}
			if m.def.Unit != "" {
				pm.Properties = sparkplug.Properties(sparkplug.PropEngUnit, m.def.Unit)
			}
			members = append(members, pm)
		}
		out = append(out, &pb.Payload_Metric{Name: proto.String(name), Alias: proto.Uint64(templateAliases + uint64(len(out))), Timestamp: proto.Uint64(ms),
			Datatype: proto.Uint32(uint32(pb.DataType_Template)),
			Value:    &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{IsDefinition: proto.Bool(true), Metrics: members}}})
	}
	return out
}

// event publishes a device's death or its birth after it came back. The
// connection metrics follow at the next tick rather than in up to 5 s.
func (n *node) event(q event) error {
	n.nodeDataAt = time.Time{}
	switch q.ev {
	case evDeath:
		return n.deviceDeath(q.dev, q.at)
	case evBirth:
		return n.birthDevice(q.dev, sparkplug.Millis(time.Now()))
	}
	return nil
}

func (n *node) deviceDeath(d *device, at time.Time) error {
	p := &pb.Payload{Timestamp: proto.Uint64(sparkplug.Millis(at)), Seq: n.nextSeq()}
	if err := n.publish(n.topic(sparkplug.DDEATH, d.ID), p); err != nil {
		return err
	}
	n.devBorn[d] = 0
	return nil
}

// events publishes the queued device deaths and births.
func (n *node) events() error {
	for _, ev := range n.e.takeEvents() {
		if err := n.event(ev); err != nil {
			return err
		}
	}
	return nil
}
