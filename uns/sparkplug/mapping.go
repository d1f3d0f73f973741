package sparkplug

import (
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// The mapping between UNS samples and Sparkplug metrics, both ways: what a
// Calx edge (and the bench's simulated edges) put in births and data, and
// what the host reads back from any node's.

// TagDef is what a birth says of a tag besides its value.
type TagDef struct {
	Name     string
	Alias    uint64
	Path     uns.Path // sent as the calx.uns property when set
	DataType uns.DataType
	Unit     string
	// Low and High are the engineering range, sent when High > Low.
	Low, High           float64
	AlarmLow, AlarmHigh *float64
	Description         string
	Writable            bool
	WriteMin, WriteMax  *float64 // sent for writable tags
}

// BirthMetric is def's metric in a DBIRTH: with its current value, time
// and quality when the edge has one (has), else null and bad at ms.
func BirthMetric(def TagDef, cur uns.Sample, has bool, ms uint64) *pb.Payload_Metric {
	wt := WireType(def.DataType)
	pm := &pb.Payload_Metric{Name: proto.String(def.Name), Alias: proto.Uint64(def.Alias), Datatype: proto.Uint32(uint32(wt))}
	q := uns.Bad
	if has {
		pm.Timestamp = proto.Uint64(Millis(cur.TS))
		SetValue(pm, wt, cur.Value)
		q = cur.Quality
	} else {
		pm.Timestamp = proto.Uint64(ms)
		pm.IsNull = proto.Bool(true)
	}
	var kv []any
	if def.Path != "" {
		kv = append(kv, PropUNSPath, string(def.Path))
	}
	kv = append(kv, PropQuality, int32(QualityCode(q)))
	if def.Unit != "" {
		kv = append(kv, PropEngUnit, def.Unit)
	}
	if def.High > def.Low {
		kv = append(kv, PropEngLow, def.Low, PropEngHigh, def.High)
	}
	if def.AlarmLow != nil {
		kv = append(kv, PropAlarmLow, *def.AlarmLow)
	}
	if def.AlarmHigh != nil {
		kv = append(kv, PropAlarmHigh, *def.AlarmHigh)
	}
	if def.Description != "" {
		kv = append(kv, PropDescription, def.Description)
	}
	kv = append(kv, PropWritable, !def.Writable)
	if def.Writable && def.WriteMin != nil {
		kv = append(kv, PropWriteMin, *def.WriteMin)
	}
	if def.Writable && def.WriteMax != nil {
		kv = append(kv, PropWriteMax, *def.WriteMax)
	}
	pm.Properties = Properties(kv...)
	return pm
}

// DataMetric is a sample's metric in a DDATA, by alias and with no
// datatype (the birth gave both); a quality other than good goes as the
// Quality property.
func DataMetric(alias uint64, dt uns.DataType, s uns.Sample, historical bool) *pb.Payload_Metric {
	pm := &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(Millis(s.TS))}
	SetValue(pm, WireType(dt), s.Value)
	if historical {
		pm.IsHistorical = proto.Bool(true)
	}
	if s.Quality != uns.Good {
		pm.Properties = Properties(PropQuality, int32(QualityCode(s.Quality)))
	}
	return pm
}

// TemplateInstance wraps members as one instance of template name; in a
// birth (birth) it carries its datatype.
func TemplateInstance(name string, alias uint64, ms *uint64, birth bool, members []*pb.Payload_Metric) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: ms,
		Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{
			TemplateRef: proto.String(name), IsDefinition: proto.Bool(false), Metrics: members}}}
	if birth {
		m.Name, m.Datatype = proto.String(name), proto.Uint32(uint32(pb.DataType_Template))
	}
	return m
}

// BdSeqMetric is the bdSeq metric of an NBIRTH (at ms) or NDEATH (ms 0).
func BdSeqMetric(bdSeq, ms uint64) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Name: proto.String(MetricBdSeq), Datatype: proto.Uint32(uint32(pb.DataType_Int64)),
		Value: &pb.Payload_Metric_LongValue{LongValue: bdSeq}}
	if ms != 0 {
		m.Timestamp = proto.Uint64(ms)
	}
	return m
}

// RebirthMetric is an NBIRTH's Node Control/Rebirth metric, false.
func RebirthMetric(ms uint64) *pb.Payload_Metric {
	return &pb.Payload_Metric{Name: proto.String(MetricRebirth), Datatype: proto.Uint32(uint32(pb.DataType_Boolean)), Timestamp: proto.Uint64(ms),
		Value: &pb.Payload_Metric_BooleanValue{BooleanValue: false}}
}

// NodeDeath is the NDEATH payload of a session (its Will, or sent before a
// clean disconnect).
func NodeDeath(bdSeq uint64, at time.Time) *pb.Payload {
	return &pb.Payload{Timestamp: proto.Uint64(Millis(at)), Metrics: []*pb.Payload_Metric{BdSeqMetric(bdSeq, 0)}}
}

// MetricPath is the UNS path of a birth metric: the one a Calx edge names
// in the calx.uns property, else <group>/<edge>/<device>/<metric>
// (<group>/_edge/<edge>/<metric> for node metrics); a template member
// (base set) goes under its instance.
func MetricPath(t Topic, m *pb.Payload_Metric, name string, base uns.Path) uns.Path {
	if path, ok := PropertyString(m, PropUNSPath); ok {
		return uns.Path(path)
	}
	if base != "" {
		return base + "/" + uns.Path(m.GetName())
	}
	if t.Device != "" {
		return uns.Path(t.Group + "/" + t.Edge + "/" + t.Device + "/" + name)
	}
	return uns.Path(t.Group + "/_edge/" + t.Edge + "/" + name)
}

// Stored reports whether a metric named name of wire type dt is a tag
// whose values are stored: a scalar, not the bdSeq or a Node Control.
func Stored(name string, dt pb.DataType) (uns.DataType, bool) {
	udt, ok := UNSType(dt)
	return udt, ok && name != MetricBdSeq && !strings.HasPrefix(name, "Node Control/")
}

// BirthTag is the tag a birth metric defines at path: its type, unit,
// description, whether it is writable (readOnly: false) and its writable
// range.
func BirthTag(t Topic, m *pb.Payload_Metric, name string, path uns.Path, dt uns.DataType) uns.Tag {
	unit, _ := PropertyString(m, PropEngUnit)
	desc, _ := PropertyString(m, PropDescription)
	ro, hasRO := PropertyBool(m, PropWritable)
	tag := uns.Tag{Path: path, DataType: dt, Unit: unit, Description: desc, Writable: hasRO && !ro,
		Sparkplug: uns.SparkplugAddr{Group: t.Group, Edge: t.Edge, Device: t.Device, Metric: name}}
	if lo, ok := PropertyFloat(m, PropWriteMin); ok {
		tag.WriteMin = &lo
	}
	if hi, ok := PropertyFloat(m, PropWriteMax); ok {
		tag.WriteMax = &hi
	}
	return tag
}

// MetricSample is the sample a metric of p carries for the tag at path,
// of wire type dt (from the birth): its own time, else the payload's; its
// Quality property, bad for a null; and whether it is historical.
func MetricSample(p *pb.Payload, m *pb.Payload_Metric, dt pb.DataType, path uns.Path) (uns.Sample, error) {
	v, err := GetValue(m, dt)
	if err != nil {
		return uns.Sample{}, err
	}
	ts := m.GetTimestamp()
	if ts == 0 {
		ts = p.GetTimestamp()
	}
	q := PropertyQuality(m)
	if v.Kind == uns.KindNull && q == uns.Good {
		q = uns.Bad
	}
	return uns.Sample{Path: path, TS: Timestamp(ts), Value: v, Quality: q, Historical: m.GetIsHistorical()}, nil
}
