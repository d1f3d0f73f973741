package sparkplug

import (
	"bytes"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// fastSeeds are payloads of the shapes the fast decoder meets, and some it
// must leave to the generated decoder.
func fastSeeds(t testing.TB) [][]byte {
	var out [][]byte
	add := func(p *pb.Payload) {
		b, err := proto.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// A data message as an edge sends it: aliases, timestamps, every
	// scalar kind, a historical value and a value of bad quality.
	data := &pb.Payload{Timestamp: proto.Uint64(1767225600000), Seq: proto.Uint64(7)}
	kinds := []struct {
		dt pb.DataType
		v  uns.Value
	}{
		{pb.DataType_Double, uns.Float(812.5)},
		{pb.DataType_Float, uns.Float(1.25)},
		{pb.DataType_Int32, uns.Int(-3)},
		{pb.DataType_Int64, uns.Int(1 << 40)},
		{pb.DataType_UInt8, uns.Int(200)},
		{pb.DataType_Boolean, uns.Bool(true)},
		{pb.DataType_String, uns.String("running")},
		{pb.DataType_DoubleArray, uns.String("[1.5,2]")},
	}
	for i, k := range kinds {
		m := &pb.Payload_Metric{Alias: proto.Uint64(uint64(i + 3)), Timestamp: proto.Uint64(1767225600000 + uint64(i)), Datatype: proto.Uint32(uint32(k.dt))}
		SetValue(m, k.dt, k.v)
		data.Metrics = append(data.Metrics, m)
	}
	data.Metrics[1].IsHistorical = proto.Bool(true)
	data.Metrics[2].Properties = Properties(PropQuality, int32(QualityBad))
	data.Metrics = append(data.Metrics, &pb.Payload_Metric{Alias: proto.Uint64(20), IsNull: proto.Bool(true), IsTransient: proto.Bool(false)},
		&pb.Payload_Metric{Name: proto.String("Kiln/Temp"), Value: &pb.Payload_Metric_BytesValue{BytesValue: []byte{0, 0, 0xc0, 0x3f}}})
	data.Uuid = proto.String("calx")
	add(data)
	add(&pb.Payload{})
	add(&pb.Payload{Body: []byte("x")})
	m := &pb.Payload_Metric{Name: proto.String("t"), Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{Version: proto.String("1")}}}
	add(&pb.Payload{Metrics: []*pb.Payload_Metric{m, {Name: proto.String("u"), Metadata: &pb.Payload_MetaData{Size: proto.Uint64(1)}}}})
	// Fields the generated decoder keeps as unknown, a repeated optional
	// field and a oneof set twice.
	raw := protowire.AppendTag(nil, 2, protowire.BytesType)
	var mb []byte
	mb = protowire.AppendTag(mb, 2, protowire.VarintType)
	mb = protowire.AppendVarint(mb, 1)
	mb = protowire.AppendTag(mb, 2, protowire.VarintType)
	mb = protowire.AppendVarint(mb, 9)
	mb = protowire.AppendTag(mb, 13, protowire.Fixed64Type)
	mb = protowire.AppendFixed64(mb, math.Float64bits(1))
	mb = protowire.AppendTag(mb, 10, protowire.VarintType)
	mb = protowire.AppendVarint(mb, 1<<33)
	raw = protowire.AppendBytes(raw, mb)
	out = append(out, raw)
	out = append(out, protowire.AppendVarint(protowire.AppendTag(raw, 99, protowire.VarintType), 1))
	out = append(out, protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType),
		protowire.AppendVarint(protowire.AppendTag(nil, 40, protowire.VarintType), 1)))
	out = append(out, protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1))
	return out
}

// sameAsGenerated fails t unless the fast decoder declines b or decodes it
// to what the generated decoder makes of it.
func sameAsGenerated(t *testing.T, b []byte) bool {
	fast, ok := decodeFast(b)
	if !ok {
		return false
	}
	var slow pb.Payload
	if err := proto.Unmarshal(b, &slow); err != nil {
		t.Fatalf("fast decoder took %x, the generated decoder refuses it: %v", b, err)
	}
	mo := proto.MarshalOptions{Deterministic: true}
	fb, err1 := mo.Marshal(fast)
	sb, err2 := mo.Marshal(&slow)
	if err1 != nil || err2 != nil || !bytes.Equal(fb, sb) {
		t.Fatalf("fast decoder differs on %x:\nfast %v\nslow %v", b, fast, &slow)
	}
	return true
}

func TestDecodeFastMatchesGenerated(t *testing.T) {
	seeds := fastSeeds(t)
	for i, b := range seeds {
		took := sameAsGenerated(t, b)
		switch i {
		case 0, 1, 3, 4, 6: // data; empty; metrics the generated decoder reads alone; repeated fields; an unknown metric field
			if !took {
				t.Errorf("seed %d: the fast decoder declined a payload it should read", i)
			}
		case 2, 5, 7: // body, an unknown top-level field, metrics with a wrong wire type
			if took {
				t.Errorf("seed %d: the fast decoder read a payload it should leave alone", i)
			}
		}
	}
	// The metric with properties went to the generated decoder alone.
	p, err := Decode(seeds[0])
	if err != nil {
		t.Fatal(err)
	}
	if q := PropertyQuality(p.Metrics[2]); q != uns.Bad {
		t.Errorf("quality of the metric with properties = %v", q)
	}
}

// TestDecodeFastAllocates shows what the fast decoder is for: a data
// message of 100 metrics in a handful of allocations, not four a metric.
func TestDecodeFastAllocates(t *testing.T) {
	buf := ddata100(t)
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := Decode(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 12 {
		t.Errorf("Decode of 100 metrics: %.0f allocations", allocs)
	}
}

func ddata100(t testing.TB) []byte {
	p := &pb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(1)}
	for i := range 100 {
		m := &pb.Payload_Metric{Alias: proto.Uint64(uint64(i + 16)), Timestamp: proto.Uint64(1767225600000)}
		SetValue(m, pb.DataType_Double, uns.Float(float64(i)))
		p.Metrics = append(p.Metrics, m)
	}
	buf, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

// FuzzDecodeFast holds the fast decoder to the generated one on any bytes.
func FuzzDecodeFast(f *testing.F) {
	for _, b := range fastSeeds(f) {
		f.Add(b)
	}
	for _, b := range tahuPayloads(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsGenerated(t, b)
	})
}
