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

// BenchmarkFleet is one edge reading 100 Modbus devices of 100 registers
// each at 1 s, against 100 real servers on loopback, for 5 s per run. It
// reports requests/s (block reads), values/s, the CPU the process used and
// its heap.
func BenchmarkFleet(b *testing.B) {
	const devices, regs = 100, 100
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
		time.Sleep(5 * time.Second)
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
