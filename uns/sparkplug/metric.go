package sparkplug

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
	"google.golang.org/protobuf/proto"
)

// Metric property keys used by Calx in births.
const (
	PropEngUnit = "engUnit"
	PropEngLow  = "engLow"
	PropEngHigh = "engHigh"
	// Calx alarm limits of a tag, in engineering units.
	PropAlarmLow  = "alarmLow"
	PropAlarmHigh = "alarmHigh"
	PropQuality   = "Quality"
	PropUNSPath   = "calx.uns"
	PropWritable  = "readOnly"
	// Calx's writable range of a tag, in engineering units.
	PropWriteMin = "writeMin"
	PropWriteMax = "writeMax"
	// PropDescription is a tag's description.
	PropDescription = "description"
)

// Quality codes of the Sparkplug Quality property.
const (
	QualityBad   = 0
	QualityGood  = 192
	QualityStale = 500
)

// Well-known metric names.
const (
	MetricBdSeq   = "bdSeq"
	MetricRebirth = "Node Control/Rebirth"
	// MetricCalxVersion is the NBIRTH metric that names a Calx edge's
	// version, and so says the node is a Calx edge.
	MetricCalxVersion = "Properties/Calx Version"
)

// ErrBadPayload is returned, wrapped with the reason, for bytes that are not a
// Sparkplug B payload Calx can use.
var ErrBadPayload = errors.New("malformed Sparkplug B payload")

// Decode unmarshals a Sparkplug B payload.
func Decode(b []byte) (*pb.Payload, error) {
	if p, ok := decodeFast(b); ok {
		return p, nil
	}
	var p pb.Payload
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return &p, nil
}

// WireType returns the Sparkplug datatype used for a UNS datatype.
func WireType(t uns.DataType) pb.DataType {
	switch t {
	case uns.TypeFloat64:
		return pb.DataType_Double
	case uns.TypeInt64:
		return pb.DataType_Int64
	case uns.TypeBool:
		return pb.DataType_Boolean
	case uns.TypeString:
		return pb.DataType_String
	}
	return pb.DataType_Unknown
}

// UNSType returns the UNS datatype that holds a Sparkplug scalar datatype, and
// false for types Calx does not store as tags (arrays, datasets, templates).
func UNSType(t pb.DataType) (uns.DataType, bool) {
	switch t {
	case pb.DataType_Float, pb.DataType_Double:
		return uns.TypeFloat64, true
	case pb.DataType_Int8, pb.DataType_Int16, pb.DataType_Int32, pb.DataType_Int64,
		pb.DataType_UInt8, pb.DataType_UInt16, pb.DataType_UInt32, pb.DataType_UInt64,
		pb.DataType_DateTime:
		return uns.TypeInt64, true
	case pb.DataType_Boolean:
		return uns.TypeBool, true
	case pb.DataType_String, pb.DataType_Text, pb.DataType_UUID:
		return uns.TypeString, true
	}
	if IsJSONType(t) {
		return uns.TypeJSON, true
	}
	return uns.TypeUnknown, false
}

// SetValue stores v into m according to the wire datatype dt.
func SetValue(m *pb.Payload_Metric, dt pb.DataType, v uns.Value) {
	if v.Kind == uns.KindNull {
		m.IsNull = proto.Bool(true)
		m.Value = nil
		return
	}
	f, _ := v.AsFloat()
	switch dt {
	case pb.DataType_Double:
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: f}
	case pb.DataType_Float:
		m.Value = &pb.Payload_Metric_FloatValue{FloatValue: float32(f)}
	case pb.DataType_Boolean:
		m.Value = &pb.Payload_Metric_BooleanValue{BooleanValue: f != 0}
	case pb.DataType_String, pb.DataType_Text, pb.DataType_UUID:
		m.Value = &pb.Payload_Metric_StringValue{StringValue: stringOf(v)}
	case pb.DataType_Int8, pb.DataType_Int16, pb.DataType_Int32, pb.DataType_UInt8, pb.DataType_UInt16:
		m.Value = &pb.Payload_Metric_IntValue{IntValue: uint32(intOf(v))}
	default: // Int64, UInt32, UInt64, DateTime
		m.Value = &pb.Payload_Metric_LongValue{LongValue: uint64(intOf(v))}
	}
}

// stringOf is v as the text of a string metric.
func stringOf(v uns.Value) string {
	if v.Kind == uns.KindString {
		return v.S
	}
	return fmt.Sprint(v.Any())
}

func intOf(v uns.Value) int64 {
	if v.Kind == uns.KindFloat {
		return int64(math.Round(v.F))
	}
	return v.I
}

// GetValue reads the value of m according to the wire datatype dt (the one
// from the birth, as data messages may omit it). Non-scalar values come back
// as JSON text (see JSONValue).
func GetValue(m *pb.Payload_Metric, dt pb.DataType) (uns.Value, error) {
	if IsJSONType(dt) {
		return JSONValue(m, dt)
	}
	return scalarValue(m, dt)
}

func scalarValue(m *pb.Payload_Metric, dt pb.DataType) (uns.Value, error) {
	if m.GetIsNull() {
		return uns.Null, nil
	}
	switch x := m.Value.(type) {
	case nil:
		return uns.Null, nil
	case *pb.Payload_Metric_DoubleValue:
		return uns.Float(x.DoubleValue), nil
	case *pb.Payload_Metric_FloatValue:
		return uns.Float(float64(x.FloatValue)), nil
	case *pb.Payload_Metric_BooleanValue:
		return uns.Bool(x.BooleanValue), nil
	case *pb.Payload_Metric_StringValue:
		return uns.String(x.StringValue), nil
	case *pb.Payload_Metric_IntValue:
		switch dt {
		case pb.DataType_Int8:
			return uns.Int(int64(int8(x.IntValue))), nil
		case pb.DataType_Int16:
			return uns.Int(int64(int16(x.IntValue))), nil
		case pb.DataType_Int32:
			return uns.Int(int64(int32(x.IntValue))), nil
		case pb.DataType_Boolean:
			return uns.Bool(x.IntValue != 0), nil
		}
		return uns.Int(int64(x.IntValue)), nil
	case *pb.Payload_Metric_LongValue:
		switch dt {
		case pb.DataType_Int8:
			return uns.Int(int64(int8(x.LongValue))), nil
		case pb.DataType_Int16:
			return uns.Int(int64(int16(x.LongValue))), nil
		case pb.DataType_Int32:
			return uns.Int(int64(int32(x.LongValue))), nil
		case pb.DataType_UInt64:
			if x.LongValue > math.MaxInt64 {
				return uns.Float(float64(x.LongValue)), nil
			}
		}
		return uns.Int(int64(x.LongValue)), nil
	}
	return uns.Null, fmt.Errorf("%w: metric %q: value type %T not stored as a tag", ErrBadPayload, m.GetName(), m.Value)
}

// Timestamp converts a Sparkplug millisecond timestamp.
func Timestamp(ms uint64) time.Time {
	if ms > math.MaxInt64 {
		ms = 0
	}
	return time.UnixMilli(int64(ms)).UTC()
}

// Millis converts a time to a Sparkplug millisecond timestamp.
func Millis(t time.Time) uint64 { return uint64(t.UnixMilli()) }

// PropertyString returns a string property of m.
func PropertyString(m *pb.Payload_Metric, key string) (string, bool) {
	ps := m.GetProperties()
	for i, k := range ps.GetKeys() {
		if k == key && i < len(ps.GetValues()) {
			if sv, ok := ps.GetValues()[i].GetValue().(*pb.Payload_PropertyValue_StringValue); ok {
				return sv.StringValue, true
			}
		}
	}
	return "", false
}

// PropertyFloat returns a numeric property of m (Double or Float).
func PropertyFloat(m *pb.Payload_Metric, key string) (float64, bool) {
	ps := m.GetProperties()
	for i, k := range ps.GetKeys() {
		if k == key && i < len(ps.GetValues()) {
			switch v := ps.GetValues()[i].GetValue().(type) {
			case *pb.Payload_PropertyValue_DoubleValue:
				return v.DoubleValue, true
			case *pb.Payload_PropertyValue_FloatValue:
				return float64(v.FloatValue), true
			}
		}
	}
	return 0, false
}

// PropertyBool returns a boolean property of m.
func PropertyBool(m *pb.Payload_Metric, key string) (val, ok bool) {
	ps := m.GetProperties()
	for i, k := range ps.GetKeys() {
		if k == key && i < len(ps.GetValues()) {
			if bv, isBool := ps.GetValues()[i].GetValue().(*pb.Payload_PropertyValue_BooleanValue); isBool {
				return bv.BooleanValue, true
			}
		}
	}
	return false, false
}

// PropertyQuality returns the UNS quality carried by m's Quality property, or
// Good when it has none.
func PropertyQuality(m *pb.Payload_Metric) uns.Quality {
	ps := m.GetProperties()
	for i, k := range ps.GetKeys() {
		if k != PropQuality || i >= len(ps.GetValues()) {
			continue
		}
		var code int64
		switch v := ps.GetValues()[i].GetValue().(type) {
		case *pb.Payload_PropertyValue_IntValue:
			code = int64(int32(v.IntValue))
		case *pb.Payload_PropertyValue_LongValue:
			code = int64(v.LongValue)
		default:
			return uns.Good
		}
		return QualityOf(code)
	}
	return uns.Good
}

// QualityOf maps a Sparkplug quality code to a UNS quality.
func QualityOf(code int64) uns.Quality {
	switch {
	case code == QualityGood:
		return uns.Good
	case code == QualityStale:
		return uns.Uncertain
	case code >= 64 && code < 192:
		return uns.Uncertain
	}
	return uns.Bad
}

// QualityCode maps a UNS quality to a Sparkplug quality code.
func QualityCode(q uns.Quality) uint32 {
	switch q {
	case uns.Good:
		return QualityGood
	case uns.Uncertain:
		return QualityStale
	}
	return QualityBad
}

// Properties builds a property set from alternating keys and values; values
// may be string, float64, int32 or bool.
func Properties(kv ...any) *pb.Payload_PropertySet {
	ps := &pb.Payload_PropertySet{}
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		pv := &pb.Payload_PropertyValue{}
		switch v := kv[i+1].(type) {
		case string:
			pv.Type = proto.Uint32(uint32(pb.DataType_String))
			pv.Value = &pb.Payload_PropertyValue_StringValue{StringValue: v}
		case float64:
			pv.Type = proto.Uint32(uint32(pb.DataType_Double))
			pv.Value = &pb.Payload_PropertyValue_DoubleValue{DoubleValue: v}
		case int32:
			pv.Type = proto.Uint32(uint32(pb.DataType_Int32))
			pv.Value = &pb.Payload_PropertyValue_IntValue{IntValue: uint32(v)}
		case bool:
			pv.Type = proto.Uint32(uint32(pb.DataType_Boolean))
			pv.Value = &pb.Payload_PropertyValue_BooleanValue{BooleanValue: v}
		default:
			continue
		}
		ps.Keys = append(ps.Keys, k)
		ps.Values = append(ps.Values, pv)
	}
	return ps
}

// SortByTime puts metrics in the order of their timestamps, keeping the
// order of those with the same time (Sparkplug wants a payload's metrics
// in time order; sources that keep their own timestamps deliver them out
// of it).
func SortByTime(ms []*pb.Payload_Metric) {
	slices.SortStableFunc(ms, func(a, b *pb.Payload_Metric) int { return cmp.Compare(a.GetTimestamp(), b.GetTimestamp()) })
}
