//go:build linux

package opcua

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua/server"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/uns"
)

// countingSink counts the good values emitted.
type countingSink struct {
	values, bad atomic.Int64
	lost        atomic.Value
}

func (s *countingSink) Emit(rs []connector.Reading) {
	for _, r := range rs {
		if r.Quality == uns.Good {
			s.values.Add(1)
		} else {
			s.bad.Add(1)
		}
	}
}
func (s *countingSink) Lost(err error) { s.lost.Store(err.Error()) }

// BenchmarkSubscriptionScale is one connector holding monitored items at
// 1 s on gopcua's OPC UA server on loopback, in this process, whose every
// variable changes every second. It reports the values received a second
// and the CPU of the whole process (the server's included: an upper bound
// of the connector's). 2,500 items by default, CALX_BENCH_OPCUA_ITEMS to
// change: with 5,000 and more, gopcua's server loses the session of its
// first publish (it sends every queued notification in one response), so
// 100,000 items need another server (docs/BENCHMARKS.md).
func BenchmarkSubscriptionScale(b *testing.B) {
	benchSubscription(b, scaleItems(b), 5*time.Second)
}

// TestSubscriptionScaleSmoke runs the benchmark's steps with 2,500 items
// (three calls to create them: the connector creates 1,000 a call) for two
// seconds; no timing asserted.
func TestSubscriptionScaleSmoke(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchSubscription(b, 2500, 2*time.Second) })
	if res.N == 0 || res.Extra["values/s"] < 1000 || res.Extra["bad"] != 0 {
		t.Fatalf("2,500 items: %v %v", res, res.Extra)
	}
}

func benchSubscription(b *testing.B, n int, run time.Duration) {
	keys := make([]string, n)
	tags := make([]*Tag, n)
	ns, url := startServerWith(b, func(ns *server.MapNamespace) {
		for i := range n {
			keys[i] = fmt.Sprintf("Line%02d.Sensor%05d", i/5000, i)
			ns.Data[keys[i]] = float64(i)
		}
	})
	for i := range n {
		tags[i] = &Tag{Name: "s" + strconv.Itoa(i), NodeID: fmt.Sprintf("ns=%d;s=%s", ns.ID(), keys[i])}
	}
	for b.Loop() {
		conn, err := New("plant", Settings{Endpoint: url, Interval: time.Second, Tags: tags}, nil)
		if err != nil {
			b.Fatal(err)
		}
		sink := &countingSink{}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := conn.Run(ctx, sink); err != nil {
				b.Logf("connector: %v", err)
			}
		})
		// The server sends each item's value when it is created.
		deadline := time.Now().Add(time.Minute)
		for sink.values.Load() < int64(n) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if sink.values.Load() < int64(n) {
			cancel()
			wg.Wait()
			b.Fatalf("%d of %d items gave a value (connection lost: %v)", sink.values.Load(), n, sink.lost.Load())
		}
		// Then every variable changes every second, spread over the second
		// (not before: gopcua's server reads its map unlocked while it
		// creates items).
		wg.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for k := 0; ; k++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for i := k % 100; i < n; i += 100 {
					ns.SetValue(keys[i], float64(k+i))
				}
			}
		})
		var before, after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		got0, start := sink.values.Load(), time.Now()
		time.Sleep(run)
		got, el := sink.values.Load()-got0, time.Since(start).Seconds()
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cancel()
		wg.Wait()
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		b.ReportMetric(float64(got)/el, "values/s")
		b.ReportMetric(float64(sink.bad.Load()), "bad")
		b.ReportMetric(cpu.Seconds()/el*100, "cpu%")
	}
}

// scaleItems is CALX_BENCH_OPCUA_ITEMS, 2,500 by default.
func scaleItems(b *testing.B) int {
	n := 2500
	if s := os.Getenv("CALX_BENCH_OPCUA_ITEMS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	return n
}
