// Package stuck bounds the waits of test helpers. A stop that does not end
// in time fails the test with the stacks of Calx's own goroutines, so that
// a hang names where it waits instead of holding the package until go
// test's timeout (which prints every goroutine of every library).
package stuck

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Within runs f and waits for it up to d. When d passes first the test
// fails with what was waited for and the stacks of the goroutines that run
// Calx code, and Within returns with f still running: it is left behind,
// and the test goes on failing instead of hanging.
func Within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Errorf("%s did not end within %s; Calx's goroutines:\n%s", what, d, Stacks())
	}
}

// Stacks returns the stacks of the goroutines that have a frame of Calx
// code, at most 40 of them; the goroutine that asks is left out, the one
// Within waits for is in.
func Stacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out strings.Builder
	kept := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if !bytes.Contains(g, []byte("calx-iiot/calx/")) || bytes.Contains(g, []byte("calx/internal/stuck.Stacks(")) {
			continue
		}
		if kept == 40 {
			out.WriteString("(more left out)\n")
			break
		}
		kept++
		out.Write(g)
		out.WriteString("\n\n")
	}
	return out.String()
}
