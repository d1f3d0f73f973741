package sparkplug

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// TestMappingRoundTrip: what the edge's mapping writes into a DBIRTH and a
// DDATA, the host's mapping reads back as the same tag and samples, after
// the bytes went over the wire.
func TestMappingRoundTrip(t *testing.T) {
	lo, hi, wmin, wmax := 10.0, 90.0, 0.0, 50.0
	def := TagDef{Name: "burner/setpoint", Alias: 7, Path: "lw/ghent/kilns/k1/burner/setpoint", DataType: uns.TypeFloat64,
		Unit: "%", Low: 0, High: 100, AlarmLow: &lo, AlarmHigh: &hi, Description: "burner set point",
		Writable: true, WriteMin: &wmin, WriteMax: &wmax}
	top := Topic{Group: "lw", Type: DBIRTH, Edge: "e1", Device: "k1"}
	ts := time.Date(2026, 12, 7, 8, 0, 0, 125e6, time.UTC)
	cur := uns.Sample{TS: ts, Value: uns.Float(42.5), Quality: uns.Uncertain}

	birth := wire(t, &pb.Payload{Timestamp: proto.Uint64(Millis(ts)), Metrics: []*pb.Payload_Metric{BirthMetric(def, cur, true, Millis(ts))}})
	bm := birth.Metrics[0]
	dt, stored := Stored(bm.GetName(), pb.DataType(bm.GetDatatype()))
	if !stored || dt != uns.TypeFloat64 {
		t.Fatalf("stored %v as %v", stored, dt)
	}
	path := MetricPath(top, bm, bm.GetName(), "")
	if path != def.Path {
		t.Fatalf("path %q, want %q", path, def.Path)
	}
	tag := BirthTag(top, bm, bm.GetName(), path, dt)
	if tag.Unit != "%" || tag.Description != def.Description || !tag.Writable || tag.WriteMin == nil || *tag.WriteMin != 0 ||
		tag.WriteMax == nil || *tag.WriteMax != 50 || tag.Sparkplug.Metric != "burner/setpoint" || tag.Sparkplug.Device != "k1" {
		t.Fatalf("tag %+v", tag)
	}
	if v, ok := PropertyFloat(bm, PropAlarmHigh); !ok || v != 90 {
		t.Fatalf("alarm high %v %v", v, ok)
	}
	s, err := MetricSample(birth, bm, pb.DataType(bm.GetDatatype()), path)
	if err != nil || s.Value != cur.Value || !s.TS.Equal(ts) || s.Quality != uns.Uncertain {
		t.Fatalf("birth sample %+v %v", s, err)
	}

	// A birth without a value says null, bad.
	null := wire(t, &pb.Payload{Metrics: []*pb.Payload_Metric{BirthMetric(def, uns.Sample{}, false, Millis(ts))}}).Metrics[0]
	if !null.GetIsNull() || PropertyQuality(null) != uns.Bad {
		t.Fatalf("null birth %v", null)
	}

	// Data: by alias, no datatype; quality only when not good.
	for _, c := range []struct {
		s    uns.Sample
		hist bool
	}{{uns.Sample{TS: ts.Add(time.Second), Value: uns.Float(43), Quality: uns.Good}, false},
		{uns.Sample{TS: ts.Add(2 * time.Second), Value: uns.Float(-1), Quality: uns.Bad}, true}} {
		data := wire(t, &pb.Payload{Timestamp: proto.Uint64(Millis(ts)), Metrics: []*pb.Payload_Metric{DataMetric(def.Alias, def.DataType, c.s, c.hist)}})
		m := data.Metrics[0]
		if m.GetAlias() != 7 || m.Datatype != nil || m.Name != nil {
			t.Fatalf("data metric %v", m)
		}
		if (c.s.Quality == uns.Good) != (m.Properties == nil) {
			t.Fatalf("quality property %v for %v", m.Properties, c.s.Quality)
		}
		got, err := MetricSample(data, m, pb.DataType_Double, path)
		want := c.s
		want.Path, want.Historical = path, c.hist
		if err != nil || got != want {
			t.Fatalf("data sample %+v, want %+v (%v)", got, want, err)
		}
	}

	// Without calx.uns a metric goes under its group, edge and device; a
	// node metric under _edge; bdSeq and Node Control are not stored.
	def.Path = ""
	bare := BirthMetric(def, cur, true, Millis(ts))
	if p := MetricPath(top, bare, "burner/setpoint", ""); p != "lw/e1/k1/burner/setpoint" {
		t.Fatalf("device path %q", p)
	}
	if p := MetricPath(Topic{Group: "lw", Edge: "e1"}, bare, "x", ""); p != "lw/_edge/e1/x" {
		t.Fatalf("node path %q", p)
	}
	for _, m := range []*pb.Payload_Metric{BdSeqMetric(3, 1), RebirthMetric(1)} {
		if _, ok := Stored(m.GetName(), pb.DataType(m.GetDatatype())); ok {
			t.Fatalf("%s stored", m.GetName())
		}
	}
	if d := NodeDeath(9, ts); d.Metrics[0].GetLongValue() != 9 || d.Metrics[0].Timestamp != nil {
		t.Fatalf("death %v", d)
	}
}

// wire marshals p and decodes it as the host does.
func wire(t *testing.T, p *pb.Payload) *pb.Payload {
	t.Helper()
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
