package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/uns"
)

// plc is a real Modbus TCP server with 1000 holding and input registers,
// coils and discrete inputs; higher addresses are refused.
type plc struct {
	mu       sync.Mutex
	holding  [1000]uint16
	input    [1000]uint16
	coils    [1000]bool
	discrete [1000]bool
	requests int
	hole     [2]uint16 // holding registers [hole[0], hole[1]) are refused too
	busy     int       // reads of holding registers answered "busy" before the next is served
	srv      *mb.ModbusServer
	url      string
}

func (p *plc) HandleCoils(r *mb.CoilsRequest) ([]bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if int(r.Addr)+int(r.Quantity) > len(p.coils) {
		return nil, mb.ErrIllegalDataAddress
	}
	if r.IsWrite {
		copy(p.coils[r.Addr:], r.Args)
		return nil, nil
	}
	return append([]bool(nil), p.coils[r.Addr:r.Addr+r.Quantity]...), nil
}

func (p *plc) HandleDiscreteInputs(r *mb.DiscreteInputsRequest) ([]bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if int(r.Addr)+int(r.Quantity) > len(p.discrete) {
		return nil, mb.ErrIllegalDataAddress
	}
	return append([]bool(nil), p.discrete[r.Addr:r.Addr+r.Quantity]...), nil
}

func (p *plc) HandleHoldingRegisters(r *mb.HoldingRegistersRequest) ([]uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if !r.IsWrite && p.busy > 0 {
		p.busy--
		return nil, mb.ErrServerDeviceBusy
	}
	if int(r.Addr)+int(r.Quantity) > len(p.holding) || r.Addr < p.hole[1] && r.Addr+r.Quantity > p.hole[0] {
		return nil, mb.ErrIllegalDataAddress
	}
	if r.IsWrite {
		copy(p.holding[r.Addr:], r.Args)
		return nil, nil
	}
	return append([]uint16(nil), p.holding[r.Addr:r.Addr+r.Quantity]...), nil
}

func (p *plc) HandleInputRegisters(r *mb.InputRegistersRequest) ([]uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if int(r.Addr)+int(r.Quantity) > len(p.input) {
		return nil, mb.ErrIllegalDataAddress
	}
	return append([]uint16(nil), p.input[r.Addr:r.Addr+r.Quantity]...), nil
}

func (p *plc) start(t *testing.T, addr string) {
	t.Helper()
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, Timeout: 30 * time.Second, MaxClients: 10,
		Logger: log.New(io.Discard, "", 0)}, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	p.srv, p.url = srv, "tcp://"+addr
}

func startPLC(t *testing.T) *plc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &plc{}
	p.start(t, addr)
	t.Cleanup(func() { p.srv.Stop() })
	return p
}

// get returns the latest reading of a tag, the number of reads and of losses.
func get(s *edgetest.Sink, tag string) (connector.Reading, int, int) {
	r, _ := s.Get(tag)
	return r, s.Reads(), s.Losses()
}

func TestReadTypesInBlocks(t *testing.T) {
	p := startPLC(t)
	f32 := math.Float32bits(1234.5)
	f64 := math.Float64bits(-0.25)
	p.holding[0] = 0xfffe                                     // int16 -2
	p.holding[1] = 40000                                      // uint16
	p.holding[2] = 0b1000_0000_0000_0100                      // bits 2 and 15
	p.holding[4], p.holding[5] = uint16(f32>>16), uint16(f32) // float32, big endian
	p.holding[6], p.holding[7] = uint16(f32), uint16(f32>>16) // float32, word swapped
	p.holding[8], p.holding[9], p.holding[10], p.holding[11] = uint16(f64>>48), uint16(f64>>32), uint16(f64>>16), uint16(f64)
	p.holding[12] = 0x3412                                // uint16 0x1234, little byte order
	p.holding[20], p.holding[21] = 'C'<<8|'a', 'l'<<8|'x' // "Calx"
	p.holding[500], p.holding[501] = 0xffff, 0xff00       // int32 -256
	p.input[10] = 2750                                    // raw 0..4000 -> 0..1400 °C
	p.coils[3] = true
	p.discrete[7] = true
	d, err := New("plc1", Settings{URL: p.url, Interval: 20 * time.Millisecond, Tags: []*Tag{
		{Name: "i16", Type: "int16", Address: 0},
		{Name: "u16", Type: "uint16", Address: 1},
		{Name: "bit2", Type: "bit", Bit: 2, Address: 2},
		{Name: "bit3", Type: "bit", Bit: 3, Address: 2},
		{Name: "f32", Type: "float32", Address: 4},
		{Name: "f32swap", Type: "float32", Address: 6, WordOrder: "little", TagOptions: connector.TagOptions{Writable: true}},
		{Name: "f64", Type: "float64", Address: 8},
		{Name: "u16le", Type: "uint16", Address: 12, ByteOrder: "little"},
		{Name: "name", Type: "string", Address: 20, Length: 2},
		{Name: "i32", Type: "int32", Address: 500},
		{Name: "temp", Area: AreaInput, Address: 10, TagOptions: connector.TagOptions{RawLow: 0, RawHigh: 4000, EngLow: 0, EngHigh: 1400, Unit: "°C"}},
		{Name: "pump", Area: AreaCoil, Address: 3},
		{Name: "door", Area: AreaDiscrete, Address: 7},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Holding 0..21 in one read, 500 in another, and one each for input, coil and discrete.
	if d.Blocks() != 5 {
		t.Fatalf("%d block reads per cycle, want 5", d.Blocks())
	}
	s := edgetest.Run(t, d)
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, n, _ := get(s, "i16"); n < 3 {
			return fmt.Errorf("%d cycles", n)
		}
		return nil
	})
	want := map[string]uns.Value{
		"i16": uns.Int(-2), "u16": uns.Int(40000), "bit2": uns.Bool(true), "bit3": uns.Bool(false),
		"f32": uns.Float(1234.5), "f32swap": uns.Float(1234.5), "f64": uns.Float(-0.25), "u16le": uns.Int(0x1234),
		"name": uns.String("Calx"), "i32": uns.Int(-256), "temp": uns.Float(962.5), "pump": uns.Bool(true), "door": uns.Bool(true),
	}
	for tag, w := range want {
		r, _, _ := get(s, tag)
		if !r.Value.Equal(w) || r.Quality != uns.Good {
			t.Errorf("%s = %+v (%v), want %+v", tag, r.Value, r.Quality, w)
		}
	}
	p.mu.Lock()
	p.requests = 0
	p.mu.Unlock()
	_, before, _ := get(s, "i16")
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, n, _ := get(s, "i16"); n < before+5 {
			return fmt.Errorf("%d cycles", n-before)
		}
		return nil
	})
	_, after, _ := get(s, "i16")
	p.mu.Lock()
	reqs := p.requests
	p.mu.Unlock()
	if perCycle := float64(reqs) / float64(after-before); perCycle > 5.5 {
		t.Errorf("%.1f requests per cycle for 13 tags, want the 5 blocks", perCycle)
	}
}

// A tag at an address the device refuses gets BAD with its error; the
// other tags of its block and of the device go on.
func TestWrongAddressIsolated(t *testing.T) {
	p := startPLC(t)
	p.holding[995] = 7
	d, err := New("plc1", Settings{URL: p.url, Interval: 20 * time.Millisecond, Tags: []*Tag{
		{Name: "good", Address: 995},
		{Name: "wrong", Address: 1002},
		{Name: "other", Address: 0},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, d)
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		g, _, _ := get(s, "good")
		w, _, _ := get(s, "wrong")
		o, _, _ := get(s, "other")
		if !g.Value.Equal(uns.Int(7)) || w.Quality != uns.Bad || o.Quality != uns.Good {
			return fmt.Errorf("good %+v wrong %+v other %+v", g, w, o)
		}
		return nil
	})
	if st := d.Stats(); st.LastError == "" || !st.Connected {
		t.Errorf("stats %+v: want the tag's error and still connected", st)
	}
	if _, _, lost := get(s, "good"); lost != 0 {
		t.Errorf("device reported lost %d times for one wrong address", lost)
	}
}

// The device goes away: it is reported lost, and comes back by itself.
func TestConnectionLossAndRecovery(t *testing.T) {
	p := startPLC(t)
	p.holding[1] = 11
	d, err := New("plc1", Settings{URL: p.url, Interval: 20 * time.Millisecond, Timeout: 300 * time.Millisecond, Tags: []*Tag{{Name: "v", Address: 1}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, d)
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if r, _, _ := get(s, "v"); !r.Value.Equal(uns.Int(11)) {
			return fmt.Errorf("v = %+v", r.Value)
		}
		return nil
	})
	addr := p.url[len("tcp://"):]
	p.srv.Stop()
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, _, lost := get(s, "v"); lost == 0 {
			return errors.New("not reported lost")
		}
		return nil
	})
	p.holding[1] = 12
	p.start(t, addr)
	edgetest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if r, _, _ := get(s, "v"); !r.Value.Equal(uns.Int(12)) {
			return fmt.Errorf("v = %+v after recovery", r.Value)
		}
		return nil
	})
}

func TestWrites(t *testing.T) {
	p := startPLC(t)
	d, err := New("plc1", Settings{URL: p.url, Tags: []*Tag{
		{Name: "sp", Type: "float32", Address: 100, WordOrder: "little", TagOptions: connector.TagOptions{Writable: true}},
		{Name: "speed", Type: "uint16", Address: 102, TagOptions: connector.TagOptions{Scale: 0.1, Writable: true}},
		{Name: "run", Area: AreaCoil, Address: 5, TagOptions: connector.TagOptions{Writable: true}},
		{Name: "ro", Address: 103},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := d.Write(ctx, "sp", uns.Float(1.5)); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, "speed", uns.Float(123.4)); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, "run", uns.Bool(true)); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, "ro", uns.Int(1)); err == nil {
		t.Error("write to a read-only tag accepted")
	}
	f := math.Float32bits(1.5)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holding[100] != uint16(f) || p.holding[101] != uint16(f>>16) || p.holding[102] != 1234 || !p.coils[5] {
		t.Fatalf("registers %v, coil %v", p.holding[100:103], p.coils[5])
	}
}

func TestSettingsErrors(t *testing.T) {
	for name, s := range map[string]Settings{
		"url":       {URL: "http://x", Tags: []*Tag{{Name: "a"}}},
		"no tags":   {URL: "tcp://x:502"},
		"type":      {URL: "tcp://x:502", Tags: []*Tag{{Name: "a", Type: "int128"}}},
		"area":      {URL: "tcp://x:502", Tags: []*Tag{{Name: "a", Area: "eeprom"}}},
		"bit":       {URL: "tcp://x:502", Tags: []*Tag{{Name: "a", Type: "bit", Bit: 16}}},
		"duplicate": {URL: "tcp://x:502", Tags: []*Tag{{Name: "a"}, {Name: "a", Address: 1}}},
		"write in":  {URL: "tcp://x:502", Tags: []*Tag{{Name: "a", Area: AreaInput, TagOptions: connector.TagOptions{Writable: true}}}},
		"order":     {URL: "tcp://x:502", Tags: []*Tag{{Name: "a", ByteOrder: "middle"}}},
	} {
		if _, err := New("d", s, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The sample config in this folder is what the README shows; it must parse.
func TestSampleConfig(t *testing.T) {
	edgetest.SampleConfig(t, "sample.yaml", func(s Settings) error {
		_, err := New("sample", s, nil)
		return err
	})
}

// BenchmarkCycle reads 100 registers spread with gaps: one cycle of block reads.
func BenchmarkCycle(b *testing.B) {
	p := &plc{}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 2, Logger: log.New(io.Discard, "", 0)}, p)
	if err != nil {
		b.Fatal(err)
	}
	srv.Start()
	defer srv.Stop()
	var tags []*Tag
	for i := range 100 {
		tags = append(tags, &Tag{Name: fmt.Sprintf("t%d", i), Address: uint16(i * 3), Type: "uint16"})
	}
	d, err := New("bench", Settings{URL: "tcp://" + addr, Tags: tags}, nil)
	if err != nil {
		b.Fatal(err)
	}
	s := &edgetest.Sink{}
	b.ReportAllocs()
	for b.Loop() {
		if err := d.cycle(context.Background(), s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "values/s")
	b.ReportMetric(float64(d.Blocks()), "requests/cycle")
	d.close()
}

// countSink counts the readings of each tag.
type countSink struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *countSink) Emit(rs []connector.Reading) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rs {
		c.n[r.Tag]++
	}
}
func (c *countSink) Lost(error) {}
func (c *countSink) count(tag string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[tag]
}

// Tags with an interval of their own are read in blocks of their own, that
// often; the others at the device's interval.
func TestPerTagInterval(t *testing.T) {
	p := startPLC(t)
	d, err := New("plc1", Settings{URL: p.url, Interval: 200 * time.Millisecond, Tags: []*Tag{
		{Name: "fast", Address: 0, TagOptions: connector.TagOptions{Interval: 20 * time.Millisecond}},
		{Name: "slow", Address: 1},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Blocks() != 2 {
		t.Fatalf("%d blocks, want one per interval", d.Blocks())
	}
	c := &countSink{n: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx, c) }()
	defer func() { cancel(); <-done }()
	edgetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := c.count("slow"); n < 3 {
			return fmt.Errorf("slow read %d times", n)
		}
		return nil
	})
	if fast, slow := c.count("fast"), c.count("slow"); fast < 4*slow {
		t.Fatalf("fast read %d times, slow %d: want about ten times as often", fast, slow)
	}
}

// Refused addresses converge, however many and of whatever kind: each is
// tried alone and backs off, a block refused for a gap the device does not
// map is read in smaller blocks, and the good tags keep their rate. (Two
// refused blocks in one cycle once put refused tags back into the plan
// every cycle, multiplying them.)
func TestRefusedAddressesConverge(t *testing.T) {
	for name, tc := range map[string]struct {
		good, bad []*Tag
	}{
		"one": {
			good: []*Tag{{Name: "g1", Address: 10}},
			bad:  []*Tag{{Name: "b1", Address: 1002}},
		},
		"two refused blocks in one cycle": {
			good: []*Tag{{Name: "g1", Address: 10}, {Name: "g2", Area: AreaInput, Address: 20}},
			bad:  []*Tag{{Name: "b1", Address: 1002}, {Name: "b2", Area: AreaInput, Address: 1005}},
		},
		"many, every kind, and a gap": {
			good: []*Tag{{Name: "g1", Address: 10}, {Name: "g2", Area: AreaInput, Address: 20}, {Name: "g3", Area: AreaCoil, Address: 30},
				{Name: "g4", Area: AreaDiscrete, Address: 40}, {Name: "gap1", Address: 498}, {Name: "gap2", Address: 506}, {Name: "g5", Address: 995}},
			bad: []*Tag{{Name: "b1", Address: 999, Type: "uint32"}, {Name: "b2", Address: 1050}, {Name: "b3", Area: AreaInput, Address: 1003},
				{Name: "b4", Area: AreaCoil, Address: 1500}, {Name: "b5", Area: AreaDiscrete, Address: 1600}, {Name: "b6", Address: 2000}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := startPLC(t)
			p.hole = [2]uint16{500, 504}
			d, err := New("plc1", Settings{URL: p.url, Interval: 20 * time.Millisecond, Tags: append(append([]*Tag{}, tc.good...), tc.bad...)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			c := &countSink{n: map[string]int{}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); d.Run(ctx, c) }()
			time.Sleep(time.Second) // refusals found, backoffs grown
			p.mu.Lock()
			before := p.requests
			p.mu.Unlock()
			counts := map[string]int{}
			for _, g := range tc.good {
				counts[g.Name] = c.count(g.Name)
			}
			time.Sleep(time.Second)
			p.mu.Lock()
			requests := p.requests - before
			p.mu.Unlock()
			// At most one request a cycle per good tag and one a second
			// per refused one, whatever the refusals did before.
			if limit := 50*len(tc.good) + 2*len(tc.bad) + 10; requests > limit {
				t.Errorf("%d requests in a second, want at most %d", requests, limit)
			}
			for _, g := range tc.good {
				if n := c.count(g.Name) - counts[g.Name]; n < 25 {
					t.Errorf("good tag %s read %d times in a second at a 20ms interval", g.Name, n)
				}
			}
			stopped := time.Now()
			cancel()
			<-done
			if took := time.Since(stopped); took > time.Second {
				t.Errorf("stopped in %s", took)
			}
			for _, b := range tc.bad {
				if b.bad == nil {
					t.Errorf("refused tag %s not marked", b.Name)
				}
			}
		})
	}
}

// A write the register cannot hold is refused, never wrapped onto the
// PLC; the tag declares its writable range through its type and scaling
// (and write_min/write_max).
func TestWritesOutOfRangeRefused(t *testing.T) {
	p := startPLC(t)
	hi := 50.0
	d, err := New("plc1", Settings{URL: p.url, Tags: []*Tag{
		{Name: "u16", Type: "uint16", Address: 10, TagOptions: connector.TagOptions{Writable: true}},
		{Name: "i32", Type: "int32", Address: 12, TagOptions: connector.TagOptions{Writable: true}},
		{Name: "pct", Type: "uint16", Address: 14, TagOptions: connector.TagOptions{Writable: true, RawLow: 0, RawHigh: 10000, EngLow: 0, EngHigh: 100}},
		{Name: "sp", Type: "int16", Address: 15, TagOptions: connector.TagOptions{Writable: true, Scale: 0.1, WriteMax: &hi}},
		{Name: "u64", Type: "uint64", Address: 20, TagOptions: connector.TagOptions{Writable: true}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		tag string
		v   uns.Value
	}{
		{"u16", uns.Int(70000)}, {"u16", uns.Int(-1)}, {"i32", uns.Float(5e9)}, {"pct", uns.Float(1000)},
		{"u16", uns.Float(math.NaN())}, {"u64", uns.Int(-1)}, {"u64", uns.Float(math.Pow(2, 64))},
	} {
		if err := d.Write(ctx, tc.tag, tc.v); err == nil {
			t.Errorf("%s = %v: written", tc.tag, tc.v.Any())
		}
	}
	p.mu.Lock()
	if regs := p.holding[10:24]; slices.ContainsFunc(regs, func(r uint16) bool { return r != 0 }) {
		t.Errorf("registers written: %v", regs)
	}
	p.mu.Unlock()
	if err := d.Write(ctx, "u16", uns.Int(65535)); err != nil {
		t.Errorf("the top of a uint16: %v", err)
	}
	defs := map[string]connector.TagDef{}
	for _, def := range d.Tags() {
		defs[def.Name] = def
	}
	for name, want := range map[string][2]float64{"u16": {0, 65535}, "i32": {math.MinInt32, math.MaxInt32}, "pct": {0, 655.35}, "sp": {-3276.8, 50}} {
		def := defs[name]
		if def.WriteMin == nil || def.WriteMax == nil || math.Abs(*def.WriteMin-want[0]) > 1e-9 || math.Abs(*def.WriteMax-want[1]) > 1e-9 {
			t.Errorf("%s writable range %v..%v, want %v", name, def.WriteMin, def.WriteMax, want)
		}
	}
}

// An exception that passes (busy) makes the block's tags BAD for that
// cycle and nothing else: no tag is refused, no block is split.
func TestBusyIsNotARefusal(t *testing.T) {
	p := startPLC(t)
	p.holding[10], p.holding[11] = 1, 2
	p.busy = 3
	d, err := New("plc1", Settings{URL: p.url, Interval: 20 * time.Millisecond, Tags: []*Tag{{Name: "a", Address: 10}, {Name: "b", Address: 11}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &countSink{n: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx, c) }()
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := c.count("a"); n < 10 {
			return fmt.Errorf("a read %d times", n)
		}
		return nil
	})
	cancel()
	<-done
	if d.Blocks() != 1 {
		t.Errorf("%d blocks after a busy device, want 1", d.Blocks())
	}
	for _, tag := range d.s.Tags {
		if tag.bad != nil || tag.split != 0 {
			t.Errorf("tag %s: refused %v, split %d", tag.Name, tag.bad, tag.split)
		}
	}
}
