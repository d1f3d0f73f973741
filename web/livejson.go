package web

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/calx-iiot/calx/uns"
)

// The live feed writes its values' JSON by hand: a busy feed carries
// hundreds of thousands of values a second, and encoding/json spends most
// of its time there on reflection. The output is the JSON encoding/json
// makes of the same fields (TestLiveJSONMatchesEncodingJSON).

// appendLiveJSON appends the JSON array of a batch of samples; types gives
// a tag's data type (booleans sent as integers are written as booleans).
func appendLiveJSON(b []byte, batch []uns.Sample, types func(uns.Path) uns.DataType) []byte {
	b = append(b, '[')
	for i := range batch {
		s := &batch[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"path":`...)
		b = appendJSONString(b, string(s.Path))
		b = append(b, `,"value":`...)
		switch v := s.Value; v.Kind { // as typed, without boxing the value
		case uns.KindFloat:
			if math.IsNaN(v.F) || math.IsInf(v.F, 0) {
				b = append(b, "null"...)
			} else {
				b = appendJSONFloat(b, v.F)
			}
		case uns.KindInt:
			if types(s.Path) == uns.TypeBool {
				b = strconv.AppendBool(b, v.I != 0)
			} else {
				b = strconv.AppendInt(b, v.I, 10)
			}
		case uns.KindBool:
			b = strconv.AppendBool(b, v.I != 0)
		case uns.KindString:
			b = appendJSONString(b, v.S)
		default:
			b = append(b, "null"...)
		}
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

// appendJSONFloat writes a finite float as encoding/json does: plain
// digits, exponent form below 1e-6 and from 1e21.
func appendJSONFloat(b []byte, f float64) []byte {
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

// appendJSONString writes s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD, and U+2028 and
// U+2029 escaped for the JavaScript that reads it.
func appendJSONString(b []byte, s string) []byte {
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
