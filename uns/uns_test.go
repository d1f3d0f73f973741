package uns

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPathValidate(t *testing.T) {
	for _, tc := range []struct {
		path Path
		ok   bool
		want string
	}{
		{"limeworks/ghent/kilns/line1/kiln1/o2", true, ""},
		{"a/b/c/d/e/folder/tag with space", true, ""},
		{"", false, "empty"},
		{"a//b", false, "segment 2"},
		{"/a", false, "segment 1"},
		{"a/b/", false, "segment 3"},
		{"a/+/b", false, "wildcard"},
		{"a/#", false, "wildcard"},
		{"a/b\x00c", false, "control"},
		{Path(strings.Repeat("x", 129)), false, "longer than 128"},
		{Path(strings.Repeat("a/", 40) + "a"), false, "segments"},
	} {
		err := tc.path.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("%q: err = %v, want ok=%v", tc.path, err, tc.ok)
			continue
		}
		if err != nil && (!errors.Is(err, ErrInvalidPath) || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: err = %v, want ErrInvalidPath mentioning %q", tc.path, err, tc.want)
		}
	}
}

func sampleSet() []Sample {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC)
	return []Sample{
		{Path: "a/b/c", TS: t0, Value: Float(1100.25)},
		{Path: "a/b/d", TS: t0.Add(time.Millisecond), Value: Int(-42), Quality: Uncertain},
		{Path: "a/b/e", TS: t0, Value: Bool(true), Historical: true},
		{Path: "a/b/f", TS: t0, Value: String("running ✓")},
		{Path: "a/b/g", TS: time.Unix(0, 0).UTC(), Value: Null, Quality: Bad},
		{Path: "a/b/h", TS: t0, Value: Float(math.Inf(-1))},
	}
}

func TestBatchRoundTrip(t *testing.T) {
	in := sampleSet()
	b := AppendBatch(nil, in)
	out, err := DecodeBatch(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %d samples, want %d", len(out), len(in))
	}
	for i := range in {
		a, o := in[i], out[i]
		if a.Path != o.Path || !a.TS.Equal(o.TS) || !a.Value.Equal(o.Value) || a.Quality != o.Quality || a.Historical != o.Historical {
			t.Errorf("sample %d: got %+v, want %+v", i, o, a)
		}
	}
}

func TestDecodeBatchFunc(t *testing.T) {
	in := sampleSet()
	b := AppendBatch(nil, in)
	keep := func(p []byte) bool { return p[len(p)-1]%2 == 0 } // a/b/d, a/b/f, a/b/h
	out, err := DecodeBatchFunc(nil, b, keep)
	if err != nil {
		t.Fatal(err)
	}
	var want []Sample
	for _, s := range in {
		if keep([]byte(s.Path)) {
			want = append(want, s)
		}
	}
	if len(want) == 0 || len(want) == len(in) {
		t.Fatalf("the sample set does not exercise the filter: %d of %d kept", len(want), len(in))
	}
	if len(out) != len(want) {
		t.Fatalf("kept %d samples, want %d", len(out), len(want))
	}
	for i := range want {
		if out[i].Path != want[i].Path || !out[i].Value.Equal(want[i].Value) || !out[i].TS.Equal(want[i].TS) {
			t.Errorf("sample %d: got %+v, want %+v", i, out[i], want[i])
		}
	}
	// What is skipped is still checked.
	if _, err := DecodeBatchFunc(nil, b[:len(b)-3], func([]byte) bool { return false }); !errors.Is(err, ErrBadBatch) {
		t.Errorf("a cut batch with nothing kept: err = %v, want ErrBadBatch", err)
	}
}

func TestDecodeBatchRejectsBadInput(t *testing.T) {
	good := AppendBatch(nil, sampleSet())
	for name, b := range map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{9}, good[1:]...),
		"cut":           good[:len(good)-3],
		"trailing":      append(append([]byte{}, good...), 0),
		"huge count":    {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad flags":     {1, 1, 1, 'a', 0, 0xC0},
		"bad kind":      {1, 1, 1, 'a', 0, 0x07},
		"string length": {1, 1, 1, 'a', 0, byte(KindString), 0x7f},
	} {
		if _, err := DecodeBatch(nil, b); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: err = %v, want ErrBadBatch", name, err)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	good := AppendBatch(nil, sampleSet())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(AppendBatch(nil, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := DecodeBatch(nil, b)
		if err != nil {
			return
		}
		// Keeping every path decodes the same; keeping none checks the same.
		if all, err := DecodeBatchFunc(nil, b, func([]byte) bool { return true }); err != nil || len(all) != len(out) {
			t.Fatalf("keeping all: %v (%d vs %d)", err, len(all), len(out))
		}
		if none, err := DecodeBatchFunc(nil, b, func([]byte) bool { return false }); err != nil || len(none) != 0 {
			t.Fatalf("keeping none: %v (%d)", err, len(none))
		}
		// What decodes re-encodes to the same bytes.
		again := AppendBatch(nil, out)
		back, err := DecodeBatch(nil, again)
		if err != nil || len(back) != len(out) {
			t.Fatalf("re-decode: %v (%d vs %d)", err, len(back), len(out))
		}
	})
}

func BenchmarkBatch(b *testing.B) {
	in := make([]Sample, 100)
	t0 := time.Now()
	for i := range in {
		in[i] = Sample{Path: "limeworks/ghent/kilns/line1/kiln1/burning_zone_temp", TS: t0.Add(time.Duration(i) * time.Millisecond), Value: Float(float64(i))}
	}
	buf := AppendBatch(nil, in)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var out []Sample
	for b.Loop() {
		buf = AppendBatch(buf[:0], in)
		out, _ = DecodeBatch(out[:0], buf)
	}
	b.ReportMetric(float64(len(in)*b.N)/b.Elapsed().Seconds(), "values/s")
}

func TestDeadband(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	f := Filter{Deadband: Deadband{Abs: 1, Heartbeat: 10 * time.Second, MinInterval: 2 * time.Second}}
	steps := []struct {
		s    int
		v    Value
		q    Quality
		pass bool
	}{
		{0, Float(10), Good, true},         // first value always
		{1, Float(20), Good, false},        // within the minimum interval
		{3, Float(10.5), Good, false},      // within the deadband
		{4, Float(11), Good, true},         // reaches the deadband
		{5, Float(11), Bad, true},          // quality change passes at once
		{7, Float(11), Bad, false},         // unchanged
		{15, Float(11), Bad, true},         // heartbeat
		{17, Float(math.NaN()), Bad, true}, // NaN differs from a number
	}
	for _, st := range steps {
		if got := f.Pass(Sample{TS: at(st.s), Value: st.v, Quality: st.q}); got != st.pass {
			t.Errorf("t=%ds %v %v: pass=%v, want %v", st.s, st.v, st.q, got, st.pass)
		}
	}
	pct := Filter{Deadband: Deadband{Percent: 1, Span: 1400}}
	pct.Pass(Sample{TS: at(0), Value: Float(1000)})
	if pct.Pass(Sample{TS: at(1), Value: Float(1013)}) {
		t.Error("13 °C is under 1% of a 1400 °C span")
	}
	if !pct.Pass(Sample{TS: at(2), Value: Float(1014)}) {
		t.Error("14 °C is 1% of a 1400 °C span")
	}
	str := Filter{}
	str.Pass(Sample{TS: at(0), Value: String("running")})
	if str.Pass(Sample{TS: at(1), Value: String("running")}) || !str.Pass(Sample{TS: at(2), Value: String("tripped")}) {
		t.Error("strings pass on change only")
	}
}

func TestQualityAndTypeNames(t *testing.T) {
	for _, q := range []Quality{Good, Uncertain, Bad} {
		back, err := ParseQuality(q.String())
		if err != nil || back != q {
			t.Errorf("quality %v: %v %v", q, back, err)
		}
	}
	if _, err := ParseQuality("fine"); err == nil {
		t.Error("unknown quality accepted")
	}
	for _, dt := range []DataType{TypeFloat64, TypeInt64, TypeBool, TypeString} {
		back, err := ParseDataType(dt.String())
		if err != nil || back != dt {
			t.Errorf("datatype %v: %v %v", dt, back, err)
		}
	}
	if _, err := ParseDataType("complex"); err == nil {
		t.Error("unknown datatype accepted")
	}
}
