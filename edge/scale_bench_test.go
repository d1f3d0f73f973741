//go:build linux

package edge_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	mb "github.com/simonvetter/modbus"

	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/modbus"
	"github.com/calx-iiot/calx/uns"
)

// changingPLC answers every read of holding registers with new values, so
// that report by exception holds nothing back: the edge's worst case.
type changingPLC struct {
	mu   sync.Mutex
	seq  uint16
	regs [1000]uint16
}

func (p *changingPLC) HandleCoils(*mb.CoilsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *changingPLC) HandleDiscreteInputs(*mb.DiscreteInputsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *changingPLC) HandleInputRegisters(*mb.InputRegistersRequest) ([]uint16, error) {
	return nil, mb.ErrIllegalFunction
}
func (p *changingPLC) HandleHoldingRegisters(r *mb.HoldingRegistersRequest) ([]uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.IsWrite || int(r.Addr)+int(r.Quantity) > len(p.regs) {
		return nil, mb.ErrIllegalDataAddress
	}
	p.seq++
	out := make([]uint16, r.Quantity)
	for i := range out {
		out[i] = p.seq + uint16(i)
	}
	return out, nil
}

// BenchmarkEdgeModbus is one Calx edge reading 1,000 Modbus TCP devices of
// 100 holding registers each every second (100,000 values a second, every
// one changed), through report by exception, the store-and-forward buffer
// and Sparkplug B, to an MQTT broker; the devices are real servers on
// loopback and the broker a real one, all in this process. It reports the
// values read and sent a second and the CPU of the whole process (servers
// and broker included: an upper bound of the edge's); BenchmarkFleet in
// edge/modbus measures the connectors alone against the same servers.
func BenchmarkEdgeModbus(b *testing.B) {
	benchEdgeModbus(b, 1000, 5*time.Second)
}

// TestEdgeModbusSmoke runs the benchmark's steps with 5 devices for a
// second; no timing asserted.
func TestEdgeModbusSmoke(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchEdgeModbus(b, 5, time.Second) })
	if res.N == 0 || res.Extra["sent/s"] < 100 {
		t.Fatalf("edge of 5 devices: %v %v", res, res.Extra)
	}
}

func benchEdgeModbus(b *testing.B, devices int, run time.Duration) {
	broker := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := broker.AddHook(new(auth.AllowHook), nil); err != nil {
		b.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "bench", Address: "127.0.0.1:0"})
	if err := broker.AddListener(tcp); err != nil {
		b.Fatal(err)
	}
	if err := broker.Serve(); err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	var devs []edge.Device
	for i := range devices {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 2, Timeout: time.Minute, Logger: log.New(io.Discard, "", 0)}, &changingPLC{})
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		defer srv.Stop()
		var tags []*modbus.Tag
		for r := range 100 {
			tags = append(tags, &modbus.Tag{Name: fmt.Sprintf("r%d", r), Address: uint16(r), Type: "uint16"})
		}
		id := fmt.Sprintf("plc%04d", i)
		d, err := modbus.New(id, modbus.Settings{URL: "tcp://" + addr, Interval: time.Second, Tags: tags}, nil)
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, edge.Device{ID: id, Path: uns.Path("limeworks/bench/area/line/" + id), Connector: d})
	}
	for b.Loop() {
		e, err := edge.New(edge.Options{Broker: "tcp://" + tcp.Address(), Group: "bench", EdgeID: "e1",
			DataDir: filepath.Join(b.TempDir(), "edge"), Devices: devs})
		if err != nil {
			b.Fatal(err)
		}
		var before syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		start := time.Now()
		if err := e.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		time.Sleep(run)
		st := e.Stats()
		el := time.Since(start).Seconds()
		var after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = e.Shutdown(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		b.ReportMetric(float64(st.Read)/el, "read/s")
		b.ReportMetric(float64(st.Sent)/el, "sent/s")
		b.ReportMetric(float64(st.Dropped), "dropped")
		b.ReportMetric(cpu.Seconds()/el*100, "cpu%")
	}
}
