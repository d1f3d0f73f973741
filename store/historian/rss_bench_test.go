package historian

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// BenchmarkLoadPeakRSS loads 10 M values (1,000 tags, one value a second
// each, interleaved, 10,000 a call) into a historian with its maintenance
// running and the default memory limit, and reports the process's peak
// resident memory. The peak is the process's: run it alone and once
// (-run '^$' -bench BenchmarkLoadPeakRSS -benchtime 1x).
func BenchmarkLoadPeakRSS(b *testing.B) {
	values := 10_000_000
	if testing.Short() { // a smoke check of the steps (make test)
		values = 100_000
	}
	for b.Loop() {
		loadPeak(b, values)
	}
	if mib, err := peakRSSMiB(); err == nil {
		b.ReportMetric(mib, "peak_rss_MiB")
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.Sys)/(1<<20), "go_sys_MiB")
}

// TestLoadSmoke loads a small history the same way; no timing asserted.
func TestLoadSmoke(t *testing.T) {
	loadPeak(t, 50_000)
}

func loadPeak(tb testing.TB, values int) {
	ctx := context.Background()
	h, err := Open(ctx, Options{Path: filepath.Join(tb.TempDir(), "load.duckdb"), MemoryLimit: memLimitForBench})
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	h.Start(ctx) // rollups and sums flushed as the cloud has them
	const tags, batchSize = 1000, 10_000
	paths := make([]uns.Path, tags)
	for i := range paths {
		paths[i] = uns.Path(fmt.Sprintf("limeworks/load/area/line/m%02d/t%03d", i/100, i%100))
	}
	t0 := time.Now().Add(-30 * 24 * time.Hour).Truncate(time.Second)
	batch := make([]uns.Sample, 0, batchSize)
	for next := 0; next < values; {
		batch = batch[:0]
		for range batchSize {
			batch = append(batch, uns.Sample{Path: paths[next%tags], TS: t0.Add(time.Duration(next/tags) * time.Second), Value: uns.Float(float64(next % 911)), Quality: uns.Good})
			next++
		}
		if err := h.WriteBatch(ctx, batch); err != nil {
			tb.Fatal(err)
		}
	}
	if n, err := h.Count(ctx, ""); err != nil || n != int64(values) {
		tb.Fatalf("stored %d of %d: %v", n, values, err)
	}
}

// peakRSSMiB reads the process's peak resident set (VmHWM).
func peakRSSMiB() (float64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// memLimitForBench is the limit the load runs with: the default, or
// CALX_BENCH_MEMORY_LIMIT (bytes) to compare another in a run of its own.
var memLimitForBench, _ = strconv.ParseInt(os.Getenv("CALX_BENCH_MEMORY_LIMIT"), 10, 64)
