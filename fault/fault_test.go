//go:build linux

package fault

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is the clock connector's counter (period 100ms) at t.
func step(t time.Time) int64 { return int64(t.Sub(base) / (100 * time.Millisecond)) }

// durationEnv reads a duration from the environment, for shorter local runs.
func durationEnv(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func intEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// settle waits until the cloud has every step from first to end of the
// tags, measuring the longest delay of live data meanwhile, and returns
// the verified report, summed over the tags.
//
// The live delay counts only once the edge is back: from the first counter
// value newer than the moment settle was called.
func (s *site) settle(t *testing.T, name string, paths []string, first, end int64, excused [][2]int64, since time.Time, timeout time.Duration) report {
	t.Helper()
	start := time.Now()
	var back, drainedAt time.Time
	var maxDelay time.Duration
	var r report
	var err error
	deadline := start.Add(timeout)
	for {
		if _, ts, err := s.latest(s.counterPath); err == nil {
			if back.IsZero() && ts.After(start) {
				back = time.Now()
			}
			if !back.IsZero() {
				maxDelay = max(maxDelay, time.Since(ts))
			}
		}
		if !s.drained() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if drainedAt.IsZero() {
			drainedAt = time.Now()
		}
		r = report{}
		for _, path := range paths {
			var vals []int64
			vals, err = s.values(path, since)
			if err != nil {
				break
			}
			pr := verify(vals, first, end, excused)
			r.expected += pr.expected
			r.stored += pr.stored
			r.lost += pr.lost
			r.duplicated += pr.duplicated
			r.missing = append(r.missing, pr.missing...)
			if pr.lost > 0 {
				r.lost += 1 << 30 // not settled: stop summing
				break
			}
		}
		if err == nil && r.lost == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not settled in %s: %+v (err %v)", name, timeout, r, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if back.IsZero() {
		back = start
	}
	// The drain ends when the edge's backlog is receipted and the historian
	// has caught up; reading the history back to verify it is not counted.
	r.scenario, r.reconnect, r.drain, r.maxLiveDelay = name, back.Sub(start), max(0, drainedAt.Sub(back)), maxDelay
	if r.duplicated != 0 || r.lost != 0 {
		t.Errorf("%s: %+v", name, r)
	}
	return r
}

// firstValue waits for data and returns the first counter step stored.
func (s *site) firstValue(t *testing.T, since time.Time) int64 {
	t.Helper()
	var first int64
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		vals, err := s.values(s.counterPath, since)
		if err != nil {
			return err
		}
		if len(vals) < 10 {
			return fmt.Errorf("%d values", len(vals))
		}
		first = vals[0]
		return nil
	})
	return first
}

// TestFaults runs the store-and-forward fault scenarios against the real
// binary and prints what each one sent, stored, lost and duplicated.
// CALX_FAULT_CUT shortens the link cut (default 60s) for a quick local run.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests run the real binary for minutes; skipped with -short")
	}
	var reports []report
	defer func() { printTable(t, reports) }()

	// A link cut and a cloud SIGKILL, with the edge connected to the cloud
	// and with Mosquitto, the plant's own broker, between them (the cloud
	// its primary host as a client).
	for _, via := range []struct {
		prefix string
		mosq   bool
		cut    time.Duration
	}{
		{"", false, durationEnv("CALX_FAULT_CUT", 60*time.Second)},
		{"on Mosquitto: ", true, durationEnv("CALX_FAULT_MOSQUITTO_CUT", 15*time.Second)},
	} {
		t.Run(via.prefix+"link cut, then restored", func(t *testing.T) {
			s := newSiteOn(t, 0, 0, via.mosq)
			since := time.Now()
			s.startCloud()
			s.edge.start()
			first := s.firstValue(t, since)
			s.proxy.Cut(true)
			time.Sleep(via.cut)
			s.proxy.Cut(false)
			end := step(time.Now())
			reports = append(reports, s.settle(t, via.prefix+"link cut "+via.cut.String(), []string{s.counterPath}, first, end, nil, since, 2*time.Minute))
		})

		t.Run(via.prefix+"cloud SIGKILL mid-stream", func(t *testing.T) {
			s := newSiteOn(t, 0, 0, via.mosq)
			since := time.Now()
			s.startCloud()
			s.edge.start()
			first := s.firstValue(t, since)
			time.Sleep(2 * time.Second)
			s.cloud.kill()
			time.Sleep(3 * time.Second)
			s.startCloud()
			end := step(time.Now())
			reports = append(reports, s.settle(t, via.prefix+"cloud SIGKILL, restarted", []string{s.counterPath}, first, end, nil, since, 2*time.Minute))
		})
	}

	t.Run("edge SIGKILL while buffering in a link cut", func(t *testing.T) {
		s := newSite(t, 0, 0)
		since := time.Now()
		s.startCloud()
		s.edge.start()
		first := s.firstValue(t, since)
		s.proxy.Cut(true)
		time.Sleep(5 * time.Second)
		killed := time.Now()
		s.edge.kill()
		time.Sleep(2 * time.Second)
		s.edge.start()
		restarted := time.Now()
		time.Sleep(3 * time.Second)
		s.proxy.Cut(false)
		end := step(time.Now())
		// Steps while the edge was dead were never read: nothing to deliver.
		excused := [][2]int64{{step(killed.Add(-100 * time.Millisecond)), step(restarted.Add(3 * time.Second))}}
		reports = append(reports, s.settle(t, "edge SIGKILL in a link cut", []string{s.counterPath}, first, end, excused, since, 2*time.Minute))
	})

	t.Run("on Mosquitto: broker restart", func(t *testing.T) {
		s := newSiteOn(t, 0, 0, true)
		since := time.Now()
		s.startCloud()
		s.edge.start()
		first := s.firstValue(t, since)
		time.Sleep(2 * time.Second)
		s.mosq.Restart()
		time.Sleep(2 * time.Second)
		end := step(time.Now())
		reports = append(reports, s.settle(t, "on Mosquitto: broker restart", []string{s.counterPath}, first, end, nil, since, 2*time.Minute))
	})

	t.Run("backlog of a million values drains beside live data", func(t *testing.T) {
		// 20 tags at 1,000 values/s (one per millisecond, the resolution of
		// Sparkplug timestamps) for 50 s: 1,000,000 values in the backlog.
		tags := intEnv("CALX_FAULT_FAST_TAGS", 20)
		cut := durationEnv("CALX_FAULT_BACKLOG_CUT", 50*time.Second)
		s := newSite(t, 1000, tags)
		paths := []string{s.fastPath}
		for i := 2; i <= tags; i++ {
			paths = append(paths, fmt.Sprintf("%s%d", s.fastPath, i))
		}
		since := time.Now()
		s.startCloud()
		s.edge.start()
		s.firstValue(t, since)
		var fastFirst int64
		checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			v, _, err := s.latest(s.fastPath)
			fastFirst = v
			return err
		})
		s.proxy.Cut(true)
		time.Sleep(cut)
		restored := time.Now()
		s.proxy.Cut(false)
		fastEnd := int64(restored.Sub(base) / time.Millisecond)
		r := s.settle(t, fmt.Sprintf("backlog: %d tags at 1000/s, cut %s", tags, cut), paths, fastFirst+1, fastEnd, nil, since, 5*time.Minute)
		reports = append(reports, r)
		t.Logf("backlog of %d values drained in %s: %.0f values/s; live data at most %s behind",
			r.expected, r.drain.Round(100*time.Millisecond), float64(r.expected)/r.drain.Seconds(), r.maxLiveDelay.Round(10*time.Millisecond))
	})
}
