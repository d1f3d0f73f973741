package opcua

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math"
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

// toGo maps a value to the Go type written to the server.
func toGo(v uns.Value, dt uns.DataType) any {
	f, _ := v.AsFloat()
	switch dt {
	case uns.TypeInt64:
		if v.Kind == uns.KindInt {
			return v.I
		}
		return int64(math.Round(f))
	case uns.TypeBool:
		return f != 0
	case uns.TypeString:
		if v.Kind == uns.KindString {
			return v.S
		}
		return fmt.Sprint(v.Any())
	}
	return f
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
