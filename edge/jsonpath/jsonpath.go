// Package jsonpath picks values out of decoded JSON documents with simple
// path expressions (keys separated by dots, array indexes in brackets:
// "uplink_message.rx_metadata[0].rssi"), as connectors that read JSON need.
package jsonpath

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/calx-iiot/calx/uns"
)

type step struct {
	key   string
	index int // -1: a key
}

// Path is a parsed path expression.
type Path []step

// Parse parses a path expression.
func Parse(p string) (Path, error) {
	if p == "" {
		return nil, errors.New("empty path")
	}
	var out Path
	for _, part := range strings.Split(p, ".") {
		key, rest, _ := strings.Cut(part, "[")
		if key != "" {
			out = append(out, step{key: key, index: -1})
		} else if rest == "" || len(out) == 0 && !strings.HasPrefix(part, "[") {
			return nil, fmt.Errorf("path %q: empty key", p)
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			n, err := strconv.Atoi(idx)
			if !ok || err != nil || n < 0 {
				return nil, fmt.Errorf("path %q: bad index %q", p, idx)
			}
			out = append(out, step{index: n})
			if after != "" && !strings.HasPrefix(after, "[") {
				return nil, fmt.Errorf("path %q: text after an index", p)
			}
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return out, nil
}

// Lookup follows the path through a document decoded by encoding/json.
func (p Path) Lookup(doc any) (any, error) {
	cur := doc
	for _, s := range p {
		if s.index < 0 {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%q: not an object", s.key)
			}
			if cur, ok = m[s.key]; !ok {
				return nil, fmt.Errorf("no key %q", s.key)
			}
			continue
		}
		a, ok := cur.([]any)
		if !ok || s.index >= len(a) {
			return nil, fmt.Errorf("no element [%d]", s.index)
		}
		cur = a[s.index]
	}
	return cur, nil
}

// Value converts a JSON value to a UNS value of the datatype: numbers also
// from numeric strings, strings from anything (objects as JSON text).
func Value(x any, dt uns.DataType) (uns.Value, error) {
	switch dt {
	case uns.TypeFloat64, uns.TypeInt64:
		var f float64
		switch v := x.(type) {
		case float64:
			f = v
		case string:
			var err error
			if f, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
				return uns.Null, fmt.Errorf("%q is not a number", v)
			}
		default:
			return uns.Null, fmt.Errorf("%v is not a number", x)
		}
		if dt == uns.TypeInt64 {
			return uns.Int(int64(f)), nil
		}
		return uns.Float(f), nil
	case uns.TypeBool:
		switch v := x.(type) {
		case bool:
			return uns.Bool(v), nil
		case float64:
			return uns.Bool(v != 0), nil
		case string:
			if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
				return uns.Bool(b), nil
			}
		}
		return uns.Null, fmt.Errorf("%v is not a boolean", x)
	default:
		if s, ok := x.(string); ok {
			return uns.String(s), nil
		}
		b, err := json.Marshal(x)
		if err != nil {
			return uns.Null, err
		}
		return uns.String(string(b)), nil
	}
}
