package sparkplug

import (
	"cmp"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// A faster way to the bytes of a data message.
//
// An edge sends a hundred thousand values a second; a *pb.Payload of them
// costs about five allocations a value (the metric, its optional fields'
// pointers, its value's oneof wrapper) and proto.Marshal walks it by
// reflection. AppendData writes the same message with protowire, from the
// values as they are: the message DataMetric's metrics in a *pb.Payload
// marshal to (TestAppendDataAsGenerated holds it to that).

// DataValue is a value of a data message: its metric's alias, the metric's
// datatype on the wire (from its birth) and the sample.
type DataValue struct {
	Alias  uint64
	Type   pb.DataType
	Sample uns.Sample
}

// SortData orders values by their timestamps in milliseconds, keeping the
// order of those with the same, as SortByTime orders metrics.
func SortData(values []DataValue) {
	slices.SortStableFunc(values, func(a, b DataValue) int { return cmp.Compare(Millis(a.Sample.TS), Millis(b.Sample.TS)) })
}

// AppendData appends to b the encoding of a data message (NDATA or DDATA)
// with timestamp ms and sequence number seq, whose metrics are values by
// alias in their order, each marked historical if historical is set.
func AppendData(b []byte, ms, seq uint64, values []DataValue, historical bool) []byte {
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, ms)
	var m []byte
	for i := range values {
		m = appendDataMetric(m[:0], &values[i], historical)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	return protowire.AppendVarint(b, seq)
}

// appendDataMetric appends the fields of a Metric as DataMetric fills it.
func appendDataMetric(b []byte, d *DataValue, historical bool) []byte {
	varint := func(b []byte, field protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, field, protowire.VarintType), v)
	}
	b = varint(b, 2, d.Alias)
	b = varint(b, 3, Millis(d.Sample.TS))
	if historical {
		b = varint(b, 5, 1)
	}
	v := d.Sample.Value
	if v.Kind == uns.KindNull {
		b = varint(b, 7, 1)
	}
	if q := d.Sample.Quality; q != uns.Good {
		// Properties {keys: [Quality], values: [{type: Int32, int_value: code}]}.
		var pv []byte
		pv = varint(pv, 1, uint64(pb.DataType_Int32))
		pv = varint(pv, 3, uint64(QualityCode(q)))
		var ps []byte
		ps = protowire.AppendTag(ps, 1, protowire.BytesType)
		ps = protowire.AppendString(ps, PropQuality)
		ps = protowire.AppendTag(ps, 2, protowire.BytesType)
		ps = protowire.AppendBytes(ps, pv)
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		b = protowire.AppendBytes(b, ps)
	}
	if v.Kind == uns.KindNull {
		return b
	}
	f, _ := v.AsFloat()
	switch d.Type { // as SetValue chooses
	case pb.DataType_Double:
		b = protowire.AppendTag(b, 13, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(f))
	case pb.DataType_Float:
		b = protowire.AppendTag(b, 12, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(float32(f)))
	case pb.DataType_Boolean:
		b = varint(b, 14, protowire.EncodeBool(f != 0))
	case pb.DataType_String, pb.DataType_Text, pb.DataType_UUID:
		b = protowire.AppendTag(b, 15, protowire.BytesType)
		b = protowire.AppendString(b, stringOf(v))
	case pb.DataType_Int8, pb.DataType_Int16, pb.DataType_Int32, pb.DataType_UInt8, pb.DataType_UInt16:
		b = varint(b, 10, uint64(uint32(intOf(v))))
	default: // Int64, UInt32, UInt64, DateTime
		b = varint(b, 11, uint64(intOf(v)))
	}
	return b
}
