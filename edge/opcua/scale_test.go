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
	if testing.Short() { // a smoke check of the steps (make test)
		benchSubscription(b, 100, time.Second)
		return
	}
	benchSubscription(b, scaleItems(b, 2500), 5*time.Second)
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
		// Every variable changes every second, spread over the second,
		// once each item has its first value (not before: gopcua's server
		// reads its map unlocked while it creates items).
		measureSubscription(b, Settings{Endpoint: url, Interval: time.Second, Tags: tags}, run, func(ctx context.Context) {
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
	}
}

// measureSubscription runs a connector with settings until every tag has
// given a value (the server sends each item's value when it is created),
// starts change (when set) beside it, and reports the values received a
// second over run and the process's CPU.
func measureSubscription(b *testing.B, settings Settings, run time.Duration, change func(ctx context.Context)) {
	n := len(settings.Tags)
	conn, err := New("plant", settings, nil)
	if err != nil {
		b.Fatal(err)
	}
	sink := &countingSink{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	stopped := make(chan struct{})
	wg.Go(func() {
		defer close(stopped)
		if err := conn.Run(ctx, sink); err != nil {
			b.Logf("connector: %v", err)
		}
	})
	deadline := time.After(5 * time.Minute)
wait:
	for sink.values.Load() < int64(n) && sink.lost.Load() == nil {
		select {
		case <-stopped:
			break wait
		case <-deadline:
			break wait
		case <-time.After(50 * time.Millisecond):
		}
	}
	if sink.values.Load() < int64(n) {
		b.Fatalf("%d of %d items gave a value (connection lost: %v)", sink.values.Load(), n, sink.lost.Load())
	}
	if change != nil {
		wg.Go(func() { change(ctx) })
	}
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	got0, start := sink.values.Load(), time.Now()
	time.Sleep(run)
	got, el := sink.values.Load()-got0, time.Since(start).Seconds()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(got)/el, "values/s")
	b.ReportMetric(float64(sink.bad.Load()), "bad")
	b.ReportMetric(cpu.Seconds()/el*100, "cpu%")
}

// scaleItems is CALX_BENCH_OPCUA_ITEMS, def by default.
func scaleItems(b *testing.B, def int) int {
	n := def
	if s := os.Getenv("CALX_BENCH_OPCUA_ITEMS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// BenchmarkSubscriptionNodeOPCUA is the connector holding monitored items
// at 1 s on node-opcua's server, a process of its own (interop/opcua),
// whose every variable changes every second: the CPU reported is this
// process's alone, the connector's. 100,000 items by default
// (CALX_BENCH_OPCUA_ITEMS to change).
func BenchmarkSubscriptionNodeOPCUA(b *testing.B) {
	if testing.Short() { // a smoke check of the steps (make test)
		benchNodeOPCUA(b, 200, 2*time.Second)
		return
	}
	benchNodeOPCUA(b, scaleItems(b, 100_000), 10*time.Second)
}

// TestSubscriptionNodeOPCUASmoke runs its steps with 2,000 items for two
// seconds; no timing asserted.
func TestSubscriptionNodeOPCUASmoke(t *testing.T) {
	startNodeServer(t) // skips, or fails under CI, without node-opcua
	res := testing.Benchmark(func(b *testing.B) { benchNodeOPCUA(b, 2000, 2*time.Second) })
	if res.N == 0 || res.Extra["values/s"] < 100 || res.Extra["bad"] != 0 {
		t.Fatalf("2,000 items on node-opcua: %v %v", res, res.Extra)
	}
}

func benchNodeOPCUA(b *testing.B, n int, run time.Duration) {
	srv := startNodeServer(b, "SCALE="+strconv.Itoa(n))
	tags := make([]*Tag, n)
	for i := range n {
		tags[i] = &Tag{Name: "s" + strconv.Itoa(i), NodeID: fmt.Sprintf("ns=%d;s=Scale.S%d", srv.ns, i)}
	}
	for b.Loop() {
		measureSubscription(b, Settings{Endpoint: srv.url, Username: "operator", Password: "secret", Interval: time.Second, Tags: tags}, run, nil)
	}
}
