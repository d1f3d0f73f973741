package uns

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// liveJSON is a value of the live feed as encoding/json would write it,
// the reference AppendSamplesJSON is held to.
type liveJSON struct {
	Path       Path      `json:"path"`
	Value      any       `json:"value"`
	TS         time.Time `json:"ts"`
	Quality    Quality   `json:"quality"`
	Historical bool      `json:"historical,omitempty"`
}

// randomBatch makes samples of every kind, with strings that need
// escaping and floats at the edges of their formats.
func randomBatch(rng *rand.Rand, n int) []Sample {
	floats := []float64{0, -0.0, 1, -1.5, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, -1e21, 123456789.125, math.MaxFloat64,
		math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1), 0.1}
	strs := []string{"", "kiln1", `a "quoted" \ path`, "tab\there\nnew\rline", "\x00\x01\x1f\x7f", "<b>&</b>",
		"Ofen ° Ω 炉", "bad \xff\xfe utf8", "\u2028\u2029", "é", string([]byte{0xe2, 0x80})}
	out := make([]Sample, n)
	for i := range out {
		s := &out[i]
		s.Path = Path("lw/site/" + strs[rng.IntN(len(strs))])
		s.TS = time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()
		s.Quality = Quality(rng.IntN(3))
		s.Historical = rng.IntN(2) == 0
		switch rng.IntN(5) {
		case 0:
			f := floats[rng.IntN(len(floats))]
			if rng.IntN(2) == 0 {
				f = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(60)-30))
			}
			s.Value = Float(f)
		case 1:
			s.Value = Int(rng.Int64() - math.MaxInt64/2)
		case 2:
			s.Value = Bool(rng.IntN(2) == 0)
		case 3:
			s.Value = String(strs[rng.IntN(len(strs))])
		default:
			s.Value = Null
		}
	}
	return out
}

func liveTypes(p Path) DataType {
	if len(p)%3 == 0 {
		return TypeBool // integers of such tags are written as booleans
	}
	return TypeFloat64
}

func TestLiveJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		batch := randomBatch(rng, 50)
		fast := AppendSamplesJSON(nil, batch, liveTypes)
		ref := make([]liveJSON, len(batch))
		for i, s := range batch {
			ref[i] = liveJSON{Path: s.Path, Value: s.Value.Typed(liveTypes(s.Path)), TS: s.TS, Quality: s.Quality, Historical: s.Historical}
		}
		want, err := json.Marshal(ref)
		if err != nil {
			t.Fatal(err)
		}
		var got, exp any
		if err := json.Unmarshal(fast, &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, fast)
		}
		if err := json.Unmarshal(want, &exp); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, exp) {
			t.Fatalf("differs:\n%s\n%s", fast, want)
		}
	}
	// Numbers are written as encoding/json writes them.
	for _, f := range []float64{1e-7, 1e21, 123.5, 1e-6, 5e-324} {
		want, _ := json.Marshal(f)
		if got := AppendJSONFloat(nil, f); string(got) != string(want) {
			t.Errorf("%v: %s, want %s", f, got, want)
		}
	}
}

func BenchmarkLiveJSON(b *testing.B) {
	batch := randomBatch(rand.New(rand.NewPCG(3, 4)), 1000)
	for i := range batch { // a realistic feed: numbers
		batch[i].Value = Float(float64(i) * 1.25)
		batch[i].Path = Path("limeworks/ghent/kilns/line1/kiln1/burning_zone_temp")
	}
	b.Run("by hand", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = AppendSamplesJSON(buf[:0], batch, liveTypes)
		}
		b.ReportMetric(float64(len(batch)*b.N)/b.Elapsed().Seconds(), "values/s")
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			ref := make([]liveJSON, len(batch))
			for i, s := range batch {
				ref[i] = liveJSON{Path: s.Path, Value: s.Value.Typed(liveTypes(s.Path)), TS: s.TS, Quality: s.Quality, Historical: s.Historical}
			}
			if _, err := json.Marshal(ref); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(batch)*b.N)/b.Elapsed().Seconds(), "values/s")
	})
}

// TestUNSJSONEncoding: the hand-written encoding says what encoding/json
// says, and stays valid JSON where encoding/json would fail (NaN).
func TestUNSJSONEncoding(t *testing.T) {
	ts := time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	cases := []struct {
		v    Value
		unit string
		dt   DataType
		want any
	}{
		{Float(1101.5), "°C", 0, 1101.5},
		{Float(1e21), "", 0, 1e21},
		{Float(123456789012), "", 0, 123456789012.0},
		{Float(-1.5e-7), "", 0, -1.5e-7},
		{Float(0), "", 0, 0.0},
		{Float(math.Copysign(0, -1)), "", 0, math.Copysign(0, -1)},
		{Int(-42), "", 0, int64(-42)},
		{Int(1), "", TypeBool, true},
		{Bool(false), "", 0, false},
		{String("say \"hi\"\\ \n\t\x01 é ✓"), "m\"3", 0, "say \"hi\"\\ \n\t\x01 é ✓"},
		{Null, "", 0, nil},
	}
	for _, c := range cases {
		s := Sample{Path: "a/b", Value: c.v, TS: ts, Quality: Uncertain}
		got := AppendPayloadJSON(nil, s, c.unit, c.dt)
		want, err := json.Marshal(unsPayload{Value: c.want, TS: ts.UTC().Format(time.RFC3339Nano), Quality: "uncertain", Unit: c.unit})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v: got %s, want %s", c.v, got, want)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		got := AppendPayloadJSON(nil, Sample{Path: "a/b", Value: Float(f), TS: ts, Quality: Bad}, "", 0)
		var p map[string]any
		if err := json.Unmarshal(got, &p); err != nil || p["value"] != nil || p["quality"] != "bad" {
			t.Errorf("%v: %s (%v)", f, got, err)
		}
	}
	// Invalid UTF-8 still makes valid JSON.
	got := AppendPayloadJSON(nil, Sample{Path: "a/b", Value: String("a\xffb"), TS: ts}, "", 0)
	if !json.Valid(got) {
		t.Errorf("invalid UTF-8: %s is not JSON", got)
	}
}

// unsPayload is the UNS JSON of one value, as encoding/json writes it.
type unsPayload struct {
	Value   any    `json:"value"`
	TS      string `json:"ts"`
	Quality string `json:"quality"`
	Unit    string `json:"unit,omitempty"`
}
