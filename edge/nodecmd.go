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
				n.e.log.Info("rebirth requested")
				n.born.Store(false)
				return
			}
		}
		n.e.log.Warn("node command refused: only Node Control/Rebirth is supported", "metrics", len(c.p.GetMetrics()))
		return
	}
	var dev *device
	for _, d := range n.e.deviceList() {
		if d.ID == c.device && !d.retired {
			dev = d
		}
	}
	if dev == nil {
		n.e.log.Warn("command for an unknown device refused", "device", c.device)
		return
	}
	n.e.mu.Lock()
	w, canWrite := dev.Connector.(Writer)
	n.e.mu.Unlock()
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
		var m *metric
		n.e.mu.Lock()
		if pm.Name != nil {
			// A member of the device's template instance, as "<instance>/<member>".
			name := pm.GetName()
			if n.e.opts.SparkplugTemplates {
				name = strings.TrimPrefix(name, dev.templateName()+"/")
			}
			m = dev.byName[name]
		} else {
			m = dev.byAlias[pm.GetAlias()]
		}
		n.e.mu.Unlock()
		switch {
		case m == nil:
			n.e.log.Warn("write to an unknown metric refused", "device", dev.ID, "metric", pm.GetName(), "alias", pm.GetAlias())
			continue
		case !m.def.Writable || !canWrite:
			n.e.log.Warn("write to a read-only metric refused", "device", dev.ID, "metric", m.def.Name)
			continue
		}
		v, err := sparkplug.GetValue(pm, sparkplug.WireType(m.def.DataType))
		if err != nil {
			n.e.log.Warn("write refused: bad value", "device", dev.ID, "metric", m.def.Name, "err", err)
			continue
		}
		if err := (uns.Tag{DataType: m.def.DataType, Unit: m.def.Unit, WriteMin: m.def.WriteMin, WriteMax: m.def.WriteMax}).CheckWrite(v); err != nil {
			n.e.writesRefused.Add(1)
			n.e.log.Warn("write refused", "device", dev.ID, "metric", m.def.Name, "err", err)
			continue
		}
		// The device write runs beside the node loop, which must not wait on a PLC.
		n.e.wg.Add(1)
		go func() {
			defer n.e.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.Write(ctx, m.def.Name, v); err != nil {
				n.e.log.Warn("device write failed", "device", dev.ID, "metric", m.def.Name, "err", err)
				return
			}
			n.e.log.Info("device written", "device", dev.ID, "metric", m.def.Name, "value", v.Any())
		}()
	}
}
