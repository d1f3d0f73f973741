package sparkplug

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// IsJSONType reports whether Calx keeps values of a Sparkplug datatype as
// JSON text: arrays, data sets, property sets, bytes and files.
func IsJSONType(t pb.DataType) bool {
	switch t {
	case pb.DataType_Bytes, pb.DataType_File, pb.DataType_DataSet, pb.DataType_PropertySet, pb.DataType_PropertySetList:
		return true
	}
	return t >= pb.DataType_Int8Array && t <= pb.DataType_DateTimeArray
}

// JSONValue renders a non-scalar metric value as JSON text.
func JSONValue(m *pb.Payload_Metric, dt pb.DataType) (uns.Value, error) {
	if m.GetIsNull() || m.Value == nil {
		return uns.Null, nil
	}
	var v any
	var err error
	switch x := m.Value.(type) {
	case *pb.Payload_Metric_BytesValue:
		if dt >= pb.DataType_Int8Array && dt <= pb.DataType_DateTimeArray {
			v, err = decodeArray(dt, x.BytesValue)
		} else {
			v = base64.StdEncoding.EncodeToString(x.BytesValue)
		}
	case *pb.Payload_Metric_DatasetValue:
		v, err = dataSetJSON(x.DatasetValue)
	case *pb.Payload_Metric_ExtensionValue:
		return uns.Null, fmt.Errorf("%w: metric %q: extension values are not supported", ErrBadPayload, m.GetName())
	default:
		// A scalar oneof under a complex datatype: keep what is there.
		sv, serr := scalarValue(m, dt)
		if serr != nil {
			return uns.Null, serr
		}
		v = sv.Any()
	}
	if err != nil {
		return uns.Null, fmt.Errorf("%w: metric %q: %v", ErrBadPayload, m.GetName(), err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return uns.Null, fmt.Errorf("%w: metric %q: %v", ErrBadPayload, m.GetName(), err)
	}
	return uns.String(string(b)), nil
}

// decodeArray reads a packed little-endian array (Sparkplug 3.0, 6.4.17).
func decodeArray(dt pb.DataType, b []byte) (any, error) {
	size := map[pb.DataType]int{
		pb.DataType_Int8Array: 1, pb.DataType_UInt8Array: 1, pb.DataType_Int16Array: 2, pb.DataType_UInt16Array: 2,
		pb.DataType_Int32Array: 4, pb.DataType_UInt32Array: 4, pb.DataType_FloatArray: 4,
		pb.DataType_Int64Array: 8, pb.DataType_UInt64Array: 8, pb.DataType_DoubleArray: 8, pb.DataType_DateTimeArray: 8,
	}
	switch dt {
	case pb.DataType_BooleanArray:
		if len(b) < 4 {
			return nil, fmt.Errorf("boolean array shorter than its count")
		}
		n := binary.LittleEndian.Uint32(b)
		bits := b[4:]
		if uint64(n) > uint64(len(bits))*8 {
			return nil, fmt.Errorf("boolean array of %d values in %d bytes", n, len(bits))
		}
		out := make([]bool, n)
		for i := range out {
			out[i] = bits[i/8]&(0x80>>(i%8)) != 0
		}
		return out, nil
	case pb.DataType_StringArray:
		var out []string
		start := 0
		for i, c := range b {
			if c == 0 {
				out = append(out, string(b[start:i]))
				start = i + 1
			}
		}
		if start != len(b) {
			return nil, fmt.Errorf("string array not NUL-terminated")
		}
		return out, nil
	}
	sz := size[dt]
	if sz == 0 || len(b)%sz != 0 {
		return nil, fmt.Errorf("%v of %d bytes", dt, len(b))
	}
	out := make([]any, 0, len(b)/sz)
	for i := 0; i < len(b); i += sz {
		c := b[i : i+sz]
		switch dt {
		case pb.DataType_Int8Array:
			out = append(out, int8(c[0]))
		case pb.DataType_UInt8Array:
			out = append(out, c[0])
		case pb.DataType_Int16Array:
			out = append(out, int16(binary.LittleEndian.Uint16(c)))
		case pb.DataType_UInt16Array:
			out = append(out, binary.LittleEndian.Uint16(c))
		case pb.DataType_Int32Array:
			out = append(out, int32(binary.LittleEndian.Uint32(c)))
		case pb.DataType_UInt32Array:
			out = append(out, binary.LittleEndian.Uint32(c))
		case pb.DataType_FloatArray:
			out = append(out, finite(float64(math.Float32frombits(binary.LittleEndian.Uint32(c)))))
		case pb.DataType_Int64Array:
			out = append(out, int64(binary.LittleEndian.Uint64(c)))
		case pb.DataType_UInt64Array:
			out = append(out, binary.LittleEndian.Uint64(c))
		case pb.DataType_DoubleArray:
			out = append(out, finite(math.Float64frombits(binary.LittleEndian.Uint64(c))))
		case pb.DataType_DateTimeArray:
			out = append(out, time.UnixMilli(int64(binary.LittleEndian.Uint64(c))).UTC().Format(time.RFC3339Nano))
		}
	}
	return out, nil
}

func finite(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}

func dataSetJSON(ds *pb.Payload_DataSet) (any, error) {
	types := make([]string, len(ds.GetTypes()))
	for i, t := range ds.GetTypes() {
		types[i] = pb.DataType(t).String()
	}
	rows := make([][]any, 0, len(ds.GetRows()))
	for _, r := range ds.GetRows() {
		row := make([]any, 0, len(r.GetElements()))
		for _, e := range r.GetElements() {
			switch x := e.GetValue().(type) {
			case *pb.Payload_DataSet_DataSetValue_IntValue:
				row = append(row, x.IntValue)
			case *pb.Payload_DataSet_DataSetValue_LongValue:
				row = append(row, x.LongValue)
			case *pb.Payload_DataSet_DataSetValue_FloatValue:
				row = append(row, finite(float64(x.FloatValue)))
			case *pb.Payload_DataSet_DataSetValue_DoubleValue:
				row = append(row, finite(x.DoubleValue))
			case *pb.Payload_DataSet_DataSetValue_BooleanValue:
				row = append(row, x.BooleanValue)
			case *pb.Payload_DataSet_DataSetValue_StringValue:
				row = append(row, x.StringValue)
			default:
				row = append(row, nil)
			}
		}
		rows = append(rows, row)
	}
	return map[string]any{"columns": ds.GetColumns(), "types": types, "rows": rows}, nil
}
