package sparkplug

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// generatedData is a data message as the generated code makes it: the
// metrics of DataMetric in a *pb.Payload, sorted by SortByTime.
func generatedData(ms, seq uint64, values []DataValue, historical bool) *pb.Payload {
	p := &pb.Payload{Timestamp: proto.Uint64(ms), Seq: proto.Uint64(seq)}
	for _, d := range values {
		p.Metrics = append(p.Metrics, DataMetric(d.Alias, unsTypeOf(d.Type), d.Sample, historical))
		// DataMetric takes a UNS datatype; set the wire one's value as it is.
		SetValue(p.Metrics[len(p.Metrics)-1], d.Type, d.Sample.Value)
		if d.Sample.Value.Kind == uns.KindNull {
			p.Metrics[len(p.Metrics)-1].Value = nil
		}
	}
	SortByTime(p.Metrics)
	return p
}

func unsTypeOf(t pb.DataType) uns.DataType {
	dt, _ := UNSType(t)
	return dt
}

// randomData makes n values of every wire type, quality and kind of value,
// some with the same millisecond.
func randomData(r *rand.Rand, n int) []DataValue {
	types := []pb.DataType{pb.DataType_Double, pb.DataType_Float, pb.DataType_Boolean, pb.DataType_String, pb.DataType_Text,
		pb.DataType_Int8, pb.DataType_Int16, pb.DataType_Int32, pb.DataType_UInt8, pb.DataType_UInt16,
		pb.DataType_Int64, pb.DataType_UInt32, pb.DataType_UInt64, pb.DataType_DateTime}
	values := []uns.Value{uns.Float(1.5), uns.Float(-0.0), uns.Float(math.MaxFloat64), uns.Float(math.Inf(-1)), uns.Int(-7), uns.Int(math.MaxInt64),
		uns.Int(1 << 40), uns.Bool(true), uns.Bool(false), uns.String(""), uns.String("running ✓"), uns.Null, uns.Float(2.5e-300)}
	qualities := []uns.Quality{uns.Good, uns.Good, uns.Bad, uns.Uncertain}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	out := make([]DataValue, n)
	for i := range out {
		out[i] = DataValue{Alias: r.Uint64N(1 << 20), Type: types[r.IntN(len(types))],
			Sample: uns.Sample{TS: t0.Add(time.Duration(r.IntN(50)) * 700 * time.Microsecond), Value: values[r.IntN(len(values))], Quality: qualities[r.IntN(len(qualities))]}}
	}
	return out
}

// TestAppendDataAsGenerated: what AppendData writes decodes (with the
// generated code) to the message the generated code makes of the same
// values, for every wire type, kind of value, quality and order.
func TestAppendDataAsGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		values := randomData(r, 1+r.IntN(60))
		historical := round%3 == 0
		want := generatedData(12345, uint64(round%256), values, historical)
		SortData(values)
		got := &pb.Payload{}
		if err := proto.Unmarshal(AppendData(nil, 12345, uint64(round%256), values, historical), got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("round %d:\ngot  %v\nwant %v", round, got, want)
		}
	}
}

func FuzzAppendData(f *testing.F) {
	f.Add(uint64(1), int64(1<<40), 3.5, "x", uint8(0), uint8(0), true)
	f.Add(uint64(1<<63), int64(-1), math.NaN(), "", uint8(7), uint8(2), false)
	f.Fuzz(func(t *testing.T, alias uint64, i int64, fl float64, s string, typ, kind uint8, historical bool) {
		v := []uns.Value{uns.Int(i), uns.Float(fl), uns.String(s), uns.Bool(i%2 == 0), uns.Null}[int(kind)%5]
		d := []DataValue{{Alias: alias, Type: pb.DataType(typ % 20), Sample: uns.Sample{TS: time.UnixMilli(i), Value: v, Quality: uns.Quality(kind % 3)}}}
		got := &pb.Payload{}
		if err := proto.Unmarshal(AppendData(nil, 1, 2, d, historical), got); err != nil {
			t.Fatal(err)
		}
		if want := generatedData(1, 2, d, historical); !proto.Equal(got, want) {
			t.Fatalf("got  %v\nwant %v", got, want)
		}
	})
}

// BenchmarkEncodeDDATA: a data message of 100 values, as the edge sends
// them, written by AppendData and (the baseline) built as a *pb.Payload and
// marshaled by the generated code.
func BenchmarkEncodeDDATA(b *testing.B) {
	t0 := time.Now()
	values := make([]DataValue, 100)
	for i := range values {
		values[i] = DataValue{Alias: uint64(i), Type: pb.DataType_Double, Sample: uns.Sample{TS: t0, Value: uns.Float(float64(i) * 1.5)}}
	}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			SortData(values)
			buf = AppendData(buf[:0], 1, 2, values, false)
		}
		b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "values/s")
	})
	b.Run("generated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p := &pb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(2)}
			for _, d := range values {
				p.Metrics = append(p.Metrics, DataMetric(d.Alias, uns.TypeFloat64, d.Sample, false))
			}
			SortByTime(p.Metrics)
			if _, err := proto.Marshal(p); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "values/s")
	})
}
