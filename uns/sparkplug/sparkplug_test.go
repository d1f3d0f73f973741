package sparkplug

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

func TestParseTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		want  Topic
		err   bool
	}{
		{"spBv1.0/limeworks/NBIRTH/ghent-edge", Topic{Group: "limeworks", Type: NBIRTH, Edge: "ghent-edge"}, false},
		{"spBv1.0/limeworks/DDATA/ghent-edge/kiln1", Topic{Group: "limeworks", Type: DDATA, Edge: "ghent-edge", Device: "kiln1"}, false},
		{"spBv1.0/STATE/calx", Topic{Type: STATE, HostID: "calx"}, false},
		{"spBv1.0/STATE/calx/extra", Topic{}, true},
		{"spBv1.0/limeworks/NBIRTH/ghent-edge/kiln1", Topic{}, true},
		{"spBv1.0/limeworks/DDATA/ghent-edge", Topic{}, true},
		{"spBv1.0/limeworks/NFOO/ghent-edge", Topic{}, true},
		{"spAv1.0/limeworks/NBIRTH/e", Topic{}, true},
		{"spBv1.0/limeworks/NDATA/+", Topic{}, true},
		{"spBv1.0//NDATA/e", Topic{}, true},
		{"spBv1.0", Topic{}, true},
	} {
		got, err := ParseTopic(tc.topic)
		if tc.err {
			if !errors.Is(err, ErrBadTopic) {
				t.Errorf("%q: err = %v, want ErrBadTopic", tc.topic, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v", tc.topic, got, err)
			continue
		}
		if got.String() != tc.topic {
			t.Errorf("%q renders back as %q", tc.topic, got.String())
		}
	}
}

func TestValueRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		dt pb.DataType
		in uns.Value
	}{
		{pb.DataType_Double, uns.Float(1100.125)},
		{pb.DataType_Float, uns.Float(9.25)},
		{pb.DataType_Int8, uns.Int(-128)},
		{pb.DataType_Int16, uns.Int(-30000)},
		{pb.DataType_Int32, uns.Int(math.MinInt32)},
		{pb.DataType_Int64, uns.Int(math.MinInt64)},
		{pb.DataType_UInt8, uns.Int(255)},
		{pb.DataType_UInt16, uns.Int(65535)},
		{pb.DataType_UInt32, uns.Int(math.MaxUint32)},
		{pb.DataType_UInt64, uns.Int(math.MaxInt64)},
		{pb.DataType_Boolean, uns.Bool(true)},
		{pb.DataType_String, uns.String("tripped")},
		{pb.DataType_DateTime, uns.Int(1767225600000)},
		{pb.DataType_Double, uns.Null},
	} {
		m := &pb.Payload_Metric{}
		SetValue(m, tc.dt, tc.in)
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var back pb.Payload_Metric
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		got, err := GetValue(&back, tc.dt)
		if err != nil || !got.Equal(tc.in) {
			t.Errorf("%v %+v: got %+v, %v", tc.dt, tc.in, got, err)
		}
	}
}

// TestDecodeTahuPayloads reads payloads that Eclipse Tahu's JavaScript
// library encoded, as a third-party edge node would send them.
func TestDecodeTahuPayloads(t *testing.T) {
	read := func(name string) *pb.Payload {
		b, err := os.ReadFile(filepath.Join("testdata", "tahu", name))
		if err != nil {
			t.Fatal(err)
		}
		p, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return p
	}
	nb := read("nbirth.bin")
	if nb.GetSeq() != 0 || nb.GetMetrics()[0].GetName() != MetricBdSeq || nb.GetMetrics()[0].GetLongValue() != 3 {
		t.Fatalf("nbirth: %v", nb)
	}
	db := read("dbirth.bin")
	want := map[string]uns.Value{
		"temp": uns.Float(1100.5), "flow": uns.Float(9.25), "count": uns.Int(4000000000), "neg": uns.Int(-5),
		"big": uns.Int(-9000000000), "run": uns.Bool(true), "state": uns.String("running"),
		"when": uns.Int(1767225600000), "gone": uns.Null,
	}
	types := map[uint64]pb.DataType{}
	for _, m := range db.GetMetrics() {
		dt := pb.DataType(m.GetDatatype())
		types[m.GetAlias()] = dt
		v, err := GetValue(m, dt)
		if err != nil || !v.Equal(want[m.GetName()]) {
			t.Errorf("dbirth %s (%v): %+v %v, want %+v", m.GetName(), dt, v, err, want[m.GetName()])
		}
		if m.GetName() == "temp" {
			if u, _ := PropertyString(m, PropEngUnit); u != "°C" {
				t.Errorf("temp engUnit = %q", u)
			}
			if q := PropertyQuality(m); q != uns.Good {
				t.Errorf("temp quality = %v", q)
			}
		}
	}
	dd := read("ddata.bin")
	if dd.GetSeq() != 2 {
		t.Errorf("ddata seq = %d", dd.GetSeq())
	}
	for _, m := range dd.GetMetrics() {
		v, err := GetValue(m, types[m.GetAlias()])
		if err != nil {
			t.Fatal(err)
		}
		switch m.GetAlias() {
		case 10:
			if !v.Equal(uns.Float(1101.25)) {
				t.Errorf("alias 10 = %+v", v)
			}
		case 13:
			if !v.Equal(uns.Int(-7)) {
				t.Errorf("alias 13 = %+v", v)
			}
		case 15:
			if !v.Equal(uns.Bool(false)) || !m.GetIsHistorical() {
				t.Errorf("alias 15 = %+v historical=%v", v, m.GetIsHistorical())
			}
		}
		if Timestamp(m.GetTimestamp()) != time.UnixMilli(1767225601000).UTC() {
			t.Errorf("alias %d timestamp %d", m.GetAlias(), m.GetTimestamp())
		}
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	for name, b := range map[string][]byte{
		"truncated varint": {0x08},
		"bad wire type":    {0x0f},
		"cut metric":       {0x12, 0x10, 0x0a},
	} {
		if _, err := Decode(b); !errors.Is(err, ErrBadPayload) {
			t.Errorf("%s: err = %v, want ErrBadPayload", name, err)
		}
	}
}

func TestQualityCodes(t *testing.T) {
	for _, q := range []uns.Quality{uns.Good, uns.Uncertain, uns.Bad} {
		if back := QualityOf(int64(QualityCode(q))); back != q {
			t.Errorf("%v -> %d -> %v", q, QualityCode(q), back)
		}
	}
}

// tahuPayloads are the payloads Eclipse Tahu made, in testdata/tahu.
func tahuPayloads(t testing.TB) [][]byte {
	files, _ := filepath.Glob(filepath.Join("testdata", "tahu", "*.bin"))
	var out [][]byte
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzDecode feeds bytes to the payload decoder and the value reader; the
// seeds are real payloads from Tahu and their halves.
func FuzzDecode(f *testing.F) {
	for _, b := range tahuPayloads(f) {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("error not ErrBadPayload: %v", err)
			}
			return
		}
		for _, m := range p.GetMetrics() {
			_, _ = GetValue(m, pb.DataType(m.GetDatatype()))
			_ = PropertyQuality(m)
			_, _ = PropertyString(m, PropUNSPath)
		}
	})
}

func BenchmarkDecodeDDATA(b *testing.B) {
	buf := ddata100(b)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "values/s")
}

func TestArrays(t *testing.T) {
	for _, tc := range []struct {
		dt   pb.DataType
		b    []byte
		want string
	}{
		{pb.DataType_Int8Array, []byte{0xff, 0x01}, "[-1,1]"},
		{pb.DataType_UInt16Array, []byte{0xff, 0xff}, "[65535]"},
		{pb.DataType_Int32Array, []byte{0xfe, 0xff, 0xff, 0xff}, "[-2]"},
		{pb.DataType_DoubleArray, []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x3f}, "[1.5]"},
		{pb.DataType_FloatArray, []byte{0, 0, 0xc0, 0x3f}, "[1.5]"},
		{pb.DataType_BooleanArray, []byte{3, 0, 0, 0, 0xa0}, "[true,false,true]"},
		{pb.DataType_StringArray, []byte("ab\x00c\x00"), `["ab","c"]`},
		{pb.DataType_DateTimeArray, []byte{0, 0, 0, 0, 0, 0, 0, 0}, `["1970-01-01T00:00:00Z"]`},
	} {
		m := &pb.Payload_Metric{Value: &pb.Payload_Metric_BytesValue{BytesValue: tc.b}}
		v, err := GetValue(m, tc.dt)
		if err != nil || v.S != tc.want {
			t.Errorf("%v: %q %v, want %s", tc.dt, v.S, err, tc.want)
		}
	}
	for _, tc := range []struct {
		dt pb.DataType
		b  []byte
	}{
		{pb.DataType_Int32Array, []byte{1, 2, 3}},
		{pb.DataType_BooleanArray, []byte{9, 0, 0, 0, 0}},
		{pb.DataType_StringArray, []byte("abc")},
	} {
		m := &pb.Payload_Metric{Value: &pb.Payload_Metric_BytesValue{BytesValue: tc.b}}
		if _, err := GetValue(m, tc.dt); !errors.Is(err, ErrBadPayload) {
			t.Errorf("%v %x: err = %v, want ErrBadPayload", tc.dt, tc.b, err)
		}
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"spBv1.0/g/NBIRTH/e", "spBv1.0/g/DDATA/e/d", "spBv1.0/STATE/h", "spBv1.0/g/DCMD/e/", "spBv1.0//NDATA/e", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTopic(s)
		if err != nil {
			if !errors.Is(err, ErrBadTopic) {
				t.Fatalf("error not ErrBadTopic: %v", err)
			}
			return
		}
		if tp.String() != s {
			t.Fatalf("%q parses to %+v which renders %q", s, tp, tp.String())
		}
	})
}
