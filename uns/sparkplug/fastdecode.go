package sparkplug

import (
	"math"

	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A faster way to the same *pb.Payload.
//
// The generated decoder spends about four allocations on every metric of
// a data message (the metric, its optional fields' pointers and its value's
// oneof wrapper), and a cloud decodes hundreds of thousands of metrics a
// second. decodeFast reads the common fields with protowire and takes the
// metrics, the optional fields and the wrappers from a few slices sized for
// the whole payload. A metric with anything else (properties, metadata,
// data sets, templates, extensions, unknown fields) is handed, alone, to the
// generated decoder; a payload with anything else at its top level is not
// decoded here at all (ok false), and neither are bytes that are not well
// formed: the caller then decodes with the generated decoder, which also
// words the error. FuzzDecodeFast holds the result to that decoder's.

// slab hands out elements of a slice allocated on first use, with room for
// the metrics still to come.
type slab[T any] struct{ s []T }

func (p *slab[T]) next(hint int) *T {
	if len(p.s) == 0 {
		p.s = make([]T, max(hint, 1))
	}
	x := &p.s[0]
	p.s = p.s[1:]
	return x
}

// set sets an optional field, taking its value's room from p the first
// time: a field repeated on the wire keeps its last value.
func set[T any](p *slab[T], field **T, v T, hint int) {
	if *field == nil {
		*field = p.next(hint)
	}
	**field = v
}

// fastAlloc holds the slabs of one payload.
type fastAlloc struct {
	u64     slab[uint64]
	u32     slab[uint32]
	bools   slab[bool]
	strs    slab[string]
	ints    slab[pb.Payload_Metric_IntValue]
	longs   slab[pb.Payload_Metric_LongValue]
	floats  slab[pb.Payload_Metric_FloatValue]
	doubles slab[pb.Payload_Metric_DoubleValue]
	boolVs  slab[pb.Payload_Metric_BooleanValue]
	strVs   slab[pb.Payload_Metric_StringValue]
	bytesVs slab[pb.Payload_Metric_BytesValue]
}

// decodeFast decodes b as the generated decoder would, or returns ok false.
func decodeFast(b []byte) (*pb.Payload, bool) {
	// First pass: check the top level and count the metrics.
	n := 0
	for rest := b; len(rest) > 0; {
		num, typ, k := protowire.ConsumeTag(rest)
		if k < 0 {
			return nil, false
		}
		rest = rest[k:]
		switch {
		case (num == 1 || num == 3) && typ == protowire.VarintType:
			k = protowire.ConsumeFieldValue(num, typ, rest)
		case (num == 2 || num == 4) && typ == protowire.BytesType:
			k = protowire.ConsumeFieldValue(num, typ, rest)
			if num == 2 {
				n++
			}
		default: // body, extensions, unknown fields, wrong wire types
			return nil, false
		}
		if k < 0 {
			return nil, false
		}
		rest = rest[k:]
	}
	p := &pb.Payload{}
	if n > 0 {
		p.Metrics = make([]*pb.Payload_Metric, 0, n)
	}
	metrics := make([]pb.Payload_Metric, n)
	var a fastAlloc
	for len(b) > 0 {
		num, _, k := protowire.ConsumeTag(b)
		b = b[k:]
		switch num {
		case 1, 3:
			v, k := protowire.ConsumeVarint(b)
			b = b[k:]
			if num == 1 {
				if p.Timestamp == nil {
					p.Timestamp = new(uint64)
				}
				*p.Timestamp = v
			} else {
				if p.Seq == nil {
					p.Seq = new(uint64)
				}
				*p.Seq = v
			}
		case 2:
			v, k := protowire.ConsumeBytes(b)
			b = b[k:]
			m := &metrics[len(p.Metrics)]
			left := n - len(p.Metrics)
			if !a.metric(m, v, left) {
				if err := proto.Unmarshal(v, m); err != nil {
					return nil, false
				}
			}
			p.Metrics = append(p.Metrics, m)
		case 4:
			v, k := protowire.ConsumeBytes(b)
			b = b[k:]
			if p.Uuid == nil {
				p.Uuid = new(string)
			}
			*p.Uuid = string(v)
		}
	}
	return p, true
}

// metric decodes one metric's bytes into m, which is zero, or returns false
// with m zero again.
func (a *fastAlloc) metric(m *pb.Payload_Metric, b []byte, left int) bool {
	if !a.metricFields(m, b, left) {
		*m = pb.Payload_Metric{}
		return false
	}
	return true
}

func (a *fastAlloc) metricFields(m *pb.Payload_Metric, b []byte, left int) bool {
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return false
		}
		b = b[k:]
		switch typ {
		case protowire.VarintType:
			v, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return false
			}
			b = b[k:]
			switch num {
			case 2:
				set(&a.u64, &m.Alias, v, 2*left)
			case 3:
				set(&a.u64, &m.Timestamp, v, 2*left)
			case 4:
				set(&a.u32, &m.Datatype, uint32(v), left)
			case 5:
				set(&a.bools, &m.IsHistorical, protowire.DecodeBool(v), left)
			case 6:
				set(&a.bools, &m.IsTransient, protowire.DecodeBool(v), left)
			case 7:
				set(&a.bools, &m.IsNull, protowire.DecodeBool(v), left)
			case 10:
				w := a.ints.next(left)
				w.IntValue = uint32(v)
				m.Value = w
			case 11:
				w := a.longs.next(left)
				w.LongValue = v
				m.Value = w
			case 14:
				w := a.boolVs.next(left)
				w.BooleanValue = protowire.DecodeBool(v)
				m.Value = w
			default:
				return false
			}
		case protowire.Fixed32Type:
			v, k := protowire.ConsumeFixed32(b)
			if k < 0 || num != 12 {
				return false
			}
			b = b[k:]
			w := a.floats.next(left)
			w.FloatValue = math.Float32frombits(v)
			m.Value = w
		case protowire.Fixed64Type:
			v, k := protowire.ConsumeFixed64(b)
			if k < 0 || num != 13 {
				return false
			}
			b = b[k:]
			w := a.doubles.next(left)
			w.DoubleValue = math.Float64frombits(v)
			m.Value = w
		case protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return false
			}
			b = b[k:]
			switch num {
			case 1:
				if m.Name == nil {
					m.Name = a.strs.next(left)
				}
				*m.Name = string(v)
			case 15:
				w := a.strVs.next(left)
				w.StringValue = string(v)
				m.Value = w
			case 16:
				w := a.bytesVs.next(left)
				w.BytesValue = append(make([]byte, 0, len(v)), v...)
				m.Value = w
			default: // metadata, properties, data sets, templates, extensions
				return false
			}
		default:
			return false
		}
	}
	return true
}
