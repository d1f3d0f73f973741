package guard

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestLoginsThrottle(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	hash := string(h)
	l := NewLogins()
	// One address guessing: ten checks, then refused unchecked.
	for i := range 30 {
		ok, throttled := l.Check("10.1.1.1:5000", "a", hash, []byte(fmt.Sprint("guess", i)))
		if ok || throttled != (i >= loginBurst) {
			t.Fatalf("guess %d: ok %v throttled %v", i, ok, throttled)
		}
	}
	if st := l.Stats(); st.Failed != loginBurst || st.Throttled != 30-loginBurst {
		t.Fatalf("stats %+v", st)
	}
	// One name guessed from many addresses: the same.
	for i := range loginBurst + 2 {
		_, throttled := l.Check(fmt.Sprintf("10.2.0.%d:5000", i), "b", hash, []byte("guess"))
		if throttled != (i >= loginBurst) {
			t.Fatalf("address %d: throttled %v", i, throttled)
		}
	}
	// Right passwords cost nothing.
	for i := range 3 * loginBurst {
		if ok, _ := l.Check("10.3.3.3:5000", "c", hash, []byte("right")); !ok {
			t.Fatalf("login %d refused", i)
		}
	}
}

// An unknown name costs a bcrypt as a known one does.
func TestLoginsUnknownNameTakesAsLong(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.DefaultCost)
	l := NewLogins()
	timeOf := func(user, hash string) time.Duration {
		best := time.Hour
		for i := range 3 {
			start := time.Now()
			l.Check(fmt.Sprintf("10.4.%d.1:1", i), user, hash, []byte("wrong"))
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := timeOf("known", string(h)), timeOf("nobody", "")
	if unknown < known/2 || unknown > known*2 {
		t.Fatalf("unknown name %s, known %s", unknown, known)
	}
}
