// Package uns is the domain of Calx: Unified Namespace paths, tags, values,
// qualities and the samples that carry them between the edge and the cloud.
//
// It imports nothing else from the project; every other package may import it.
// It owns validation of paths, the compact batch encoding of samples that
// travels on the backbone, and the JSON of values (the uns/ payload and the
// live feed). It must not know about MQTT, NATS or storage.
package uns

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Limits of a UNS path.
const (
	MaxSegmentLen = 128
	MaxPathLen    = 1024
	MaxSegments   = 32
)

// ErrInvalidPath is returned, wrapped with the reason, for a path that does not
// follow the UNS rules.
var ErrInvalidPath = errors.New("invalid UNS path")

// Path is a UNS path such as "limeworks/namur/kilns/line1/kiln1/o2_pct":
// enterprise/site/area/line/machine/tag, where the tag may sit in folders.
type Path string

// Validate reports whether p is a usable UNS path: non-empty segments separated
// by '/', no MQTT wildcards, no control characters, and within the length limits.
func (p Path) Validate() error {
	s := string(p)
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPath)
	}
	if len(s) > MaxPathLen {
		return fmt.Errorf("%w: %d bytes is longer than %d", ErrInvalidPath, len(s), MaxPathLen)
	}
	segs := strings.Split(s, "/")
	if len(segs) > MaxSegments {
		return fmt.Errorf("%w: %d segments is more than %d", ErrInvalidPath, len(segs), MaxSegments)
	}
	for i, seg := range segs {
		if err := ValidateSegment(seg); err != nil {
			return fmt.Errorf("%w: segment %d of %q: %v", ErrInvalidPath, i+1, s, err)
		}
	}
	return nil
}

// ValidateSegment checks one segment of a path (or a Sparkplug id).
func ValidateSegment(seg string) error {
	if seg == "" {
		return errors.New("empty segment")
	}
	if len(seg) > MaxSegmentLen {
		return fmt.Errorf("segment longer than %d bytes", MaxSegmentLen)
	}
	for _, r := range seg {
		switch {
		case r == '+' || r == '#':
			return fmt.Errorf("MQTT wildcard %q not allowed", r)
		case r == '/':
			return errors.New("'/' not allowed inside a segment")
		case r < 0x20 || r == 0x7f:
			return errors.New("control character not allowed")
		}
	}
	return nil
}

// Segments splits the path into its segments.
func (p Path) Segments() []string { return strings.Split(string(p), "/") }

// Join builds a path from segments.
func Join(segs ...string) Path { return Path(strings.Join(segs, "/")) }

// Quality tells how far a value can be trusted.
type Quality uint8

// Qualities, in the order of the wire encoding.
const (
	Good Quality = iota
	Uncertain
	Bad
)

// String returns the lower-case name used in JSON and the UNS MQTT payload.
func (q Quality) String() string {
	switch q {
	case Good:
		return "good"
	case Uncertain:
		return "uncertain"
	default:
		return "bad"
	}
}

// ParseQuality is the inverse of String.
func ParseQuality(s string) (Quality, error) {
	switch s {
	case "good":
		return Good, nil
	case "uncertain":
		return Uncertain, nil
	case "bad":
		return Bad, nil
	}
	return Bad, fmt.Errorf("unknown quality %q (want good, uncertain or bad)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (q Quality) MarshalText() ([]byte, error) { return []byte(q.String()), nil }

// DataType is the type of a tag's values.
type DataType uint8

// Data types. The zero value is unknown.
const (
	TypeUnknown DataType = iota
	TypeFloat64
	TypeInt64
	TypeBool
	TypeString
	// TypeJSON holds a value that is not a scalar (an array, a data set, a
	// property set, bytes) as JSON text, so that nothing is dropped.
	TypeJSON
)

var typeNames = [...]string{"unknown", "float64", "int64", "bool", "string", "json"}

// String returns the config and API name of the type.
func (t DataType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "unknown"
}

// ParseDataType is the inverse of String; it also accepts common aliases.
func ParseDataType(s string) (DataType, error) {
	switch strings.ToLower(s) {
	case "float64", "double", "float", "float32", "real":
		return TypeFloat64, nil
	case "int64", "int", "int32", "int16", "uint16", "uint32", "integer":
		return TypeInt64, nil
	case "bool", "boolean":
		return TypeBool, nil
	case "string", "text":
		return TypeString, nil
	case "json":
		return TypeJSON, nil
	}
	return TypeUnknown, fmt.Errorf("unknown datatype %q (want float64, int64, bool or string)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (t DataType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *DataType) UnmarshalText(b []byte) error {
	v, err := ParseDataType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Kind tells which field of a Value holds the value.
type Kind uint8

// Kinds of value.
const (
	KindNull Kind = iota
	KindFloat
	KindInt
	KindBool
	KindString
)

// Value is one typed value. Only the field named by Kind is meaningful.
type Value struct {
	Kind Kind
	F    float64
	I    int64
	S    string
}

// Float returns a float value.
func Float(f float64) Value { return Value{Kind: KindFloat, F: f} }

// Int returns an integer value.
func Int(i int64) Value { return Value{Kind: KindInt, I: i} }

// Bool returns a boolean value.
func Bool(b bool) Value {
	v := Value{Kind: KindBool}
	if b {
		v.I = 1
	}
	return v
}

// String returns a string value.
func String(s string) Value { return Value{Kind: KindString, S: s} }

// Null is the absent value, used with bad quality.
var Null = Value{}

// AsFloat returns the value as a float64 for trends and deadbands; ok is false
// for null and string values.
func (v Value) AsFloat() (f float64, ok bool) {
	switch v.Kind {
	case KindFloat:
		return v.F, true
	case KindInt, KindBool:
		return float64(v.I), true
	}
	return 0, false
}

// Any returns the value as a plain Go value for JSON: float64, int64, bool,
// string or nil. NaN and infinities become nil, as JSON cannot carry them.
func (v Value) Any() any {
	switch v.Kind {
	case KindFloat:
		if math.IsNaN(v.F) || math.IsInf(v.F, 0) {
			return nil
		}
		return v.F
	case KindInt:
		return v.I
	case KindBool:
		return v.I != 0
	case KindString:
		return v.S
	}
	return nil
}

// Equal reports whether two values are the same.
func (v Value) Equal(o Value) bool {
	if v.Kind != o.Kind {
		return false
	}
	switch v.Kind {
	case KindFloat:
		return v.F == o.F || (math.IsNaN(v.F) && math.IsNaN(o.F))
	case KindInt, KindBool:
		return v.I == o.I
	case KindString:
		return v.S == o.S
	}
	return true
}

// Sample is one value of one tag at one time, as it travels through Calx.
type Sample struct {
	Path       Path
	TS         time.Time
	Value      Value
	Quality    Quality
	Historical bool // sent late, from a buffer; never to be taken as current
}

// SparkplugAddr locates a tag on the Sparkplug wire.
type SparkplugAddr struct {
	Group  string `json:"group"`
	Edge   string `json:"edge_node"`
	Device string `json:"device,omitempty"`
	Metric string `json:"metric"`
}

// Tag describes one tag of the namespace.
type Tag struct {
	Path        Path     `json:"path"`
	DataType    DataType `json:"datatype"`
	Unit        string   `json:"unit,omitempty"`
	Description string   `json:"description,omitempty"`
	Writable    bool     `json:"writable"`
	// WriteMin and WriteMax bound what may be written, in engineering
	// units: what the device's type and scaling take, narrowed by the
	// tag's settings; nil where there is no bound.
	WriteMin  *float64      `json:"write_min,omitempty"`
	WriteMax  *float64      `json:"write_max,omitempty"`
	Sparkplug SparkplugAddr `json:"sparkplug"`
}

// CheckWrite says whether v may be written to the tag: a number must be
// finite and within WriteMin..WriteMax.
func (t Tag) CheckWrite(v Value) error {
	f, ok := v.AsFloat()
	if !ok || t.DataType == TypeBool {
		return nil
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%w: %v is not a finite number", ErrOutOfRange, v.Any())
	}
	if t.WriteMin != nil && f < *t.WriteMin || t.WriteMax != nil && f > *t.WriteMax {
		return fmt.Errorf("%w: %v is outside %s", ErrOutOfRange, v.Any(), t.WriteRange())
	}
	return nil
}

// WriteRange says the writable range in words.
func (t Tag) WriteRange() string {
	switch {
	case t.WriteMin != nil && t.WriteMax != nil:
		return strings.TrimSpace(fmt.Sprintf("the tag's writable range %v to %v %s", *t.WriteMin, *t.WriteMax, t.Unit))
	case t.WriteMin != nil:
		return strings.TrimSpace(fmt.Sprintf("the tag's writable range from %v %s", *t.WriteMin, t.Unit))
	case t.WriteMax != nil:
		return strings.TrimSpace(fmt.Sprintf("the tag's writable range up to %v %s", *t.WriteMax, t.Unit))
	}
	return "no range"
}

// ErrOutOfRange is returned for a write outside a tag's writable range.
var ErrOutOfRange = errors.New("value out of range")
