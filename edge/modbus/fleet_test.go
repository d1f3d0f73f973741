//go:build linux

package modbus

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/calx-iiot/calx/edge/edgetest"
)

// BenchmarkFleet is one edge reading Modbus devices of 100 registers each
// at 1 s, 100 and 1,000 of them (10,000 and 100,000 values a second),
// against as many real servers on loopback in the same process, for 5 s
// per run. It reports requests/s (block reads), values/s, the CPU the
// process used (the servers' included: an upper bound of the connector's)
// and its heap.
func BenchmarkFleet(b *testing.B) {
	if testing.Short() { // a smoke check of the steps (make test)
		benchFleet(b, 5, 100, time.Second)
		return
	}
	for _, devices := range []int{100, 1000} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) { benchFleet(b, devices, 100, 5*time.Second) })
	}
}

// TestFleetSmoke runs the benchmark's steps with 5 devices for a second;
// no timing asserted.
func TestFleetSmoke(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchFleet(b, 5, 100, time.Second) })
	if res.N == 0 || res.Extra["values/s"] < 100 {
		t.Fatalf("fleet of 5 devices: %v %v", res, res.Extra)
	}
}

func benchFleet(b *testing.B, devices, regs int, run time.Duration) {
	var servers []*mb.ModbusServer
	var conns []*Device
	for i := range devices {
		p := &plc{}
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 2, Timeout: time.Minute, Logger: log.New(io.Discard, "", 0)}, p)
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		servers = append(servers, srv)
		var tags []*Tag
		for r := range regs {
			tags = append(tags, &Tag{Name: fmt.Sprintf("r%d", r), Address: uint16(r), Type: "uint16"})
		}
		d, err := New(fmt.Sprintf("dev%d", i), Settings{URL: "tcp://" + addr, Interval: time.Second, Tags: tags}, nil)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, d)
	}
	defer func() {
		for _, s := range servers {
			s.Stop()
		}
	}()
	b.ResetTimer()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		sinks := make([]*edgetest.Sink, len(conns))
		var before syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		start := time.Now()
		for i, d := range conns {
			sinks[i] = &edgetest.Sink{}
			wg.Add(1)
			go func() { defer wg.Done(); d.Run(ctx, sinks[i]) }()
		}
		time.Sleep(run)
		cancel()
		wg.Wait()
		el := time.Since(start).Seconds()
		var after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		var reqs uint64
		reads := 0
		for i, d := range conns {
			reqs += d.Stats().Reads
			reads += sinks[i].Reads()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(reqs)/el, "requests/s")
		b.ReportMetric(float64(reads*regs)/el, "values/s")
		b.ReportMetric(cpu.Seconds()/el*100, "cpu%")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	}
}
