package uns

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// The UNS JSON of values is written by hand, in one place: the cloud's
// retained uns/ topics, the edge's site broker and the web's live feed
// carry hundreds of thousands of values a second, and encoding/json spends
// most of its time there on reflection. The output is what encoding/json
// makes of the same fields, except that NaN and infinities (which JSON
// cannot carry) are null and invalid UTF-8 is replaced instead of refused.

// Typed is v as its tag's data type says: booleans travel as integers in
// Sparkplug and in the history.
func (v Value) Typed(dt DataType) any {
	if dt == TypeBool && (v.Kind == KindInt || v.Kind == KindBool) {
		return v.I != 0
	}
	return v.Any()
}

// AppendPayloadJSON appends the UNS payload of a value as it goes out on
// MQTT under uns/<path>:
// {"value":1101.5,"ts":"2026-11-24T10:00:00Z","quality":"good","unit":"°C"}.
// dt is the tag's data type (an integer of a boolean tag is written as a
// boolean); the time is in UTC; unit is left out when empty.
func AppendPayloadJSON(b []byte, s Sample, unit string, dt DataType) []byte {
	b = append(b, `{"value":`...)
	b = AppendValueJSON(b, s.Value, dt)
	b = append(b, `,"ts":"`...)
	b = s.TS.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","quality":"`...)
	b = append(b, s.Quality.String()...)
	b = append(b, '"')
	if unit != "" {
		b = append(b, `,"unit":`...)
		b = AppendJSONString(b, unit)
	}
	return append(b, '}')
}

// AppendSamplesJSON appends a batch of samples as a JSON array of
// {"path","value","ts","quality"[,"historical":true]}; types gives a tag's
// data type.
func AppendSamplesJSON(b []byte, batch []Sample, types func(Path) DataType) []byte {
	b = append(b, '[')
	for i := range batch {
		s := &batch[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"path":`...)
		b = AppendJSONString(b, string(s.Path))
		b = append(b, `,"value":`...)
		dt := TypeUnknown
		if s.Value.Kind == KindInt {
			dt = types(s.Path)
		}
		b = AppendValueJSON(b, s.Value, dt)
		b = append(b, `,"ts":"`...)
		b = s.TS.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","quality":"`...)
		b = append(b, s.Quality.String()...)
		b = append(b, '"')
		if s.Historical {
			b = append(b, `,"historical":true`...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// AppendValueJSON appends v as its JSON value, typed by dt.
func AppendValueJSON(b []byte, v Value, dt DataType) []byte {
	switch v.Kind { // as typed, without boxing the value
	case KindFloat:
		return AppendJSONFloat(b, v.F)
	case KindInt:
		if dt == TypeBool {
			return strconv.AppendBool(b, v.I != 0)
		}
		return strconv.AppendInt(b, v.I, 10)
	case KindBool:
		return strconv.AppendBool(b, v.I != 0)
	case KindString:
		return AppendJSONString(b, v.S)
	}
	return append(b, "null"...)
}

// AppendJSONFloat writes f as encoding/json does (plain digits, exponent
// form below 1e-6 and from 1e21); NaN and infinities as null.
func AppendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-07 as e-7
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// AppendJSONString writes s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD, and U+2028 and
// U+2029 escaped for the JavaScript that reads it.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
