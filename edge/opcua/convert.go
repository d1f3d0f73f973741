package opcua

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// convert maps an OPC UA value to the tag's datatype.
func convert(x any, dt uns.DataType) (uns.Value, error) {
	var f float64
	isNum := true
	switch v := x.(type) {
	case float64:
		f = v
	case float32:
		f = float64(v)
	case int8:
		f = float64(v)
	case int16:
		f = float64(v)
	case int32:
		f = float64(v)
	case int64:
		if dt == uns.TypeInt64 {
			return uns.Int(v), nil
		}
		f = float64(v)
	case uint8:
		f = float64(v)
	case uint16:
		f = float64(v)
	case uint32:
		f = float64(v)
	case uint64:
		if dt == uns.TypeInt64 && v <= math.MaxInt64 {
			return uns.Int(int64(v)), nil
		}
		f = float64(v)
	case bool:
		if dt == uns.TypeBool {
			return uns.Bool(v), nil
		}
		if v {
			f = 1
		}
	case string:
		isNum = false
		if dt == uns.TypeString {
			return uns.String(v), nil
		}
	case time.Time:
		if dt == uns.TypeString {
			return uns.String(v.UTC().Format(time.RFC3339Nano)), nil
		}
		f = float64(v.UnixMilli())
	default:
		isNum = false
	}
	switch dt {
	case uns.TypeFloat64:
		if isNum {
			return uns.Float(f), nil
		}
	case uns.TypeInt64:
		if isNum {
			return uns.Int(int64(math.Round(f))), nil
		}
	case uns.TypeBool:
		if isNum {
			return uns.Bool(f != 0), nil
		}
	case uns.TypeString:
		return uns.String(fmt.Sprint(x)), nil
	}
	return uns.Null, fmt.Errorf("%T value %v is not a %s", x, x, dt)
}

// nodeType is an OPC UA built-in data type a write can be sent as, with
// the range of its values.
type nodeType struct {
	numeric bool
	lo, hi  float64
	integer bool
}

var nodeTypes = map[string]nodeType{
	"Boolean": {},
	"String":  {},
	"SByte":   {numeric: true, integer: true, lo: math.MinInt8, hi: math.MaxInt8},
	"Byte":    {numeric: true, integer: true, lo: 0, hi: math.MaxUint8},
	"Int16":   {numeric: true, integer: true, lo: math.MinInt16, hi: math.MaxInt16},
	"UInt16":  {numeric: true, integer: true, lo: 0, hi: math.MaxUint16},
	"Int32":   {numeric: true, integer: true, lo: math.MinInt32, hi: math.MaxInt32},
	"UInt32":  {numeric: true, integer: true, lo: 0, hi: math.MaxUint32},
	"Int64":   {numeric: true, integer: true, lo: math.MinInt64, hi: math.MaxInt64},
	"UInt64":  {numeric: true, integer: true, lo: 0, hi: math.MaxUint64},
	"Float":   {numeric: true, lo: -math.MaxFloat32, hi: math.MaxFloat32},
	"Double":  {numeric: true, lo: -math.MaxFloat64, hi: math.MaxFloat64},
}

func nodeTypeNames() []string {
	names := make([]string, 0, len(nodeTypes))
	for n := range nodeTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// nodeTypeOf names the node type of a value the server sent.
func nodeTypeOf(x any) (string, bool) {
	switch x.(type) {
	case bool:
		return "Boolean", true
	case string:
		return "String", true
	case int8:
		return "SByte", true
	case uint8:
		return "Byte", true
	case int16:
		return "Int16", true
	case uint16:
		return "UInt16", true
	case int32:
		return "Int32", true
	case uint32:
		return "UInt32", true
	case int64:
		return "Int64", true
	case uint64:
		return "UInt64", true
	case float32:
		return "Float", true
	case float64:
		return "Double", true
	}
	return "", false
}

// toNodeType makes the Go value of a node type from a raw value, or says
// why the type cannot hold it (nothing is ever wrapped or cut).
func toNodeType(v uns.Value, typ string) (any, error) {
	nt, ok := nodeTypes[typ]
	if !ok {
		return nil, fmt.Errorf("node type %q cannot be written", typ)
	}
	switch typ {
	case "Boolean":
		if v.Kind == uns.KindBool {
			return v.I != 0, nil
		}
		f, ok := v.AsFloat()
		if !ok {
			return nil, fmt.Errorf("%v is not a Boolean", v.Any())
		}
		return f != 0, nil
	case "String":
		if v.Kind == uns.KindString {
			return v.S, nil
		}
		return fmt.Sprint(v.Any()), nil
	}
	if v.Kind == uns.KindInt && (typ == "Int64" || typ == "UInt64") {
		if typ == "UInt64" && v.I < 0 {
			return nil, fmt.Errorf("%d is outside the range of a UInt64", v.I)
		}
		if typ == "UInt64" {
			return uint64(v.I), nil
		}
		return v.I, nil
	}
	f, ok := v.AsFloat()
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%v is not a finite number", v.Any())
	}
	if nt.integer {
		f = math.Round(f)
	}
	over := f > nt.hi || (typ == "Int64" && f >= 1<<63) || (typ == "UInt64" && f >= 1<<64)
	if f < nt.lo || over {
		return nil, fmt.Errorf("%v is outside the range of the node's %s (%v to %v)", f, typ, nt.lo, nt.hi)
	}
	switch typ {
	case "SByte":
		return int8(f), nil
	case "Byte":
		return uint8(f), nil
	case "Int16":
		return int16(f), nil
	case "UInt16":
		return uint16(f), nil
	case "Int32":
		return int32(f), nil
	case "UInt32":
		return uint32(f), nil
	case "Int64":
		return int64(f), nil
	case "UInt64":
		return uint64(f), nil
	case "Float":
		return float32(f), nil
	}
	return f, nil
}

// pemOrDER returns the DER bytes of a certificate file in either form.
func pemOrDER(b []byte) []byte {
	if blk, _ := pem.Decode(b); blk != nil {
		return blk.Bytes
	}
	if _, err := x509.ParseCertificate(b); err == nil {
		return b
	}
	return b
}
