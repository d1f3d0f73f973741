package stuck_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/internal/stuck"
)

// recorder keeps what a helper reports instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func waitsForever(release chan struct{}) { <-release }

func TestWithinNamesAHang(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	go waitsForever(release)
	r := &recorder{TB: t}
	start := time.Now()
	stuck.Within(r, 50*time.Millisecond, "the test's stop", func() { <-release })
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Within waited %s", took)
	}
	if len(r.errs) != 1 {
		t.Fatalf("%d failures reported, want 1", len(r.errs))
	}
	if !strings.Contains(r.errs[0], "the test's stop did not end within 50ms") || !strings.Contains(r.errs[0], "stuck_test.waitsForever") {
		t.Fatalf("failure does not name the wait and the goroutine:\n%s", r.errs[0])
	}
}

func TestWithinQuietWhenDone(t *testing.T) {
	r := &recorder{TB: t}
	ran := false
	stuck.Within(r, time.Minute, "a quick stop", func() { ran = true })
	if !ran || len(r.errs) != 0 {
		t.Fatalf("ran %v, failures %q", ran, r.errs)
	}
}
