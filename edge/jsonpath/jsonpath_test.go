package jsonpath

import (
	"encoding/json"
	"testing"

	"github.com/calx-iiot/calx/uns"
)

func TestLookup(t *testing.T) {
	var doc any
	json.Unmarshal([]byte(`{"a":{"b":[10,{"c":"x"}]},"n":"42.5","t":true,"o":{"k":1}}`), &doc)
	for _, tc := range []struct {
		path string
		dt   uns.DataType
		want uns.Value
	}{
		{"a.b[0]", uns.TypeFloat64, uns.Float(10)},
		{"a.b[1].c", uns.TypeString, uns.String("x")},
		{"n", uns.TypeFloat64, uns.Float(42.5)},
		{"n", uns.TypeInt64, uns.Int(42)},
		{"t", uns.TypeBool, uns.Bool(true)},
		{"o", uns.TypeString, uns.String(`{"k":1}`)},
	} {
		p, err := Parse(tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		x, err := p.Lookup(doc)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		v, err := Value(x, tc.dt)
		if err != nil || !v.Equal(tc.want) {
			t.Errorf("%s as %v = %+v %v, want %+v", tc.path, tc.dt, v, err, tc.want)
		}
	}
	for _, bad := range []string{"", "a[x]", "a[1]b", "a..b"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
	for _, missing := range []string{"a.z", "a.b[5]", "n.x"} {
		p, _ := Parse(missing)
		if _, err := p.Lookup(doc); err == nil {
			t.Errorf("%s found", missing)
		}
	}
}
