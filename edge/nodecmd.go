package edge

import (
	"context"
	"strings"
	"time"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Commands from the host: rebirth requests and writes to devices.

// command handles an NCMD or DCMD payload.
func (n *node) command(c cmd) {
	if c.device == "" {
		for _, m := range c.p.GetMetrics() {
			// By name, or by the alias of the birth alone, as a host
			// that follows payloads-alias-data-cmd-requirement sends it.
			rebirth := m.GetName() == sparkplug.MetricRebirth || m.Name == nil && m.GetAlias() == aliasRebirth
			if rebirth && m.GetBooleanValue() {
				n.log.Info("rebirth requested")
				n.born.Store(false)
				return
			}
		}
		n.log.Warn("node command refused: only Node Control/Rebirth is supported", "metrics", len(c.p.GetMetrics()))
		return
	}
	var dev *device
	for _, d := range n.e.deviceList() {
		if d.ID == c.device && !d.retired {
			dev = d
		}
	}
	if dev == nil {
		n.log.Warn("command for an unknown device refused", "device", c.device)
		return
	}
	w, canWrite := n.e.writerOf(dev)
	// A write to the device's template instance carries its members.
	var metrics []*pb.Payload_Metric
	for _, pm := range c.p.GetMetrics() {
		if tv := pm.GetTemplateValue(); tv != nil && !tv.GetIsDefinition() {
			metrics = append(metrics, tv.GetMetrics()...)
			continue
		}
		metrics = append(metrics, pm)
	}
	for _, pm := range metrics {
		m := n.e.commandTarget(dev, pm)
		switch {
		case m == nil:
			n.log.Warn("write to an unknown metric refused", "device", dev.ID, "metric", pm.GetName(), "alias", pm.GetAlias())
			continue
		case !m.def.Writable || !canWrite:
			n.log.Warn("write to a read-only metric refused", "device", dev.ID, "metric", m.def.Name)
			continue
		}
		v, err := sparkplug.GetValue(pm, sparkplug.WireType(m.def.DataType))
		if err != nil {
			n.log.Warn("write refused: bad value", "device", dev.ID, "metric", m.def.Name, "err", err)
			continue
		}
		if err := (uns.Tag{DataType: m.def.DataType, Unit: m.def.Unit, WriteMin: m.def.WriteMin, WriteMax: m.def.WriteMax}).CheckWrite(v); err != nil {
			n.e.writesRefused.Add(1)
			n.log.Warn("write refused", "device", dev.ID, "metric", m.def.Name, "err", err)
			continue
		}
		// The device write runs beside the node loop, which must not wait on a PLC.
		n.e.wg.Add(1)
		go func() {
			defer n.e.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.Write(ctx, m.def.Name, v); err != nil {
				n.log.Warn("device write failed", "device", dev.ID, "metric", m.def.Name, "err", err)
				return
			}
			n.log.Info("device written", "device", dev.ID, "metric", m.def.Name, "value", v.Any())
		}()
	}
}

// writerOf returns the device's connector as a Writer, if it writes.
func (e *Edge) writerOf(d *device) (Writer, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := d.Connector.(Writer)
	return w, ok
}

// commandTarget is the metric of d a command's metric names: by alias, or
// by name (a member of d's template instance as "<instance>/<member>");
// nil when d has none such.
func (e *Edge) commandTarget(d *device, pm *pb.Payload_Metric) *metric {
	e.mu.Lock()
	defer e.mu.Unlock()
	if pm.Name == nil {
		return d.byAlias[pm.GetAlias()]
	}
	name := pm.GetName()
	if e.opts.SparkplugTemplates {
		name = strings.TrimPrefix(name, d.templateName()+"/")
	}
	return d.byName[name]
}
