package guard

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
)

// Password checks allowed per address and per user name: a burst, then one
// every loginEvery; a check that succeeds costs nothing.
const (
	loginBurst = 10
	loginEvery = 2 * time.Second
	loginIdle  = 10 * time.Minute // a key unused this long is forgotten
)

// Logins throttles the password checks of a listener per client address
// and per user name, so that guessing is slow and cannot keep a core busy
// with bcrypt, and spends a bcrypt on an unknown name too, so that the time
// of an answer does not tell which names exist.
type Logins struct {
	mu    sync.Mutex
	keys  map[string]*limiter
	pass  time.Time // last prune
	dummy []byte    // a bcrypt hash nothing matches

	throttled, failed atomic.Uint64
}

type limiter struct {
	lim  *rate.Limiter
	used time.Time
}

// NewLogins returns the throttle of one listener.
func NewLogins() *Logins {
	dummy, _ := bcrypt.GenerateFromPassword([]byte("no password matches this"), bcrypt.DefaultCost)
	return &Logins{keys: map[string]*limiter{}, dummy: dummy}
}

func (l *Logins) limiter(key string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.pass) > loginIdle {
		for k, e := range l.keys {
			if now.Sub(e.used) > loginIdle {
				delete(l.keys, k)
			}
		}
		l.pass = now
	}
	e, ok := l.keys[key]
	if !ok {
		e = &limiter{lim: rate.NewLimiter(rate.Every(loginEvery), loginBurst)}
		l.keys[key] = e
	}
	e.used = now
	return e.lim
}

// Check compares pw with hash (empty: an unknown user name) for a client
// at remote, unless that address or that name has used up its checks; it
// says whether the password matched and whether the check was throttled.
func (l *Logins) Check(remote, user string, hash string, pw []byte) (ok, throttled bool) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	now := time.Now()
	la, lu := l.limiter("a:"+host, now), l.limiter("u:"+user, now)
	// Checks that succeed cost nothing (a site's edges behind one address
	// reconnect at once); each failure is charged after the fact, into
	// debt if checks ran side by side, so that a parallel burst of
	// guesses is paid for by a longer wait.
	if la.TokensAt(now) < 1 || lu.TokensAt(now) < 1 {
		l.throttled.Add(1)
		return false, true
	}
	if hash == "" {
		_ = bcrypt.CompareHashAndPassword(l.dummy, pw)
	}
	if hash == "" || bcrypt.CompareHashAndPassword([]byte(hash), pw) != nil {
		la.ReserveN(now, 1)
		lu.ReserveN(now, 1)
		l.failed.Add(1)
		return false, false
	}
	return true, false
}

// LoginStats are the throttle's counters.
type LoginStats struct {
	Throttled uint64 // refused unchecked: the address or name had no checks left
	Failed    uint64 // checked and wrong, unknown names included
}

// Stats returns the throttle's counters.
func (l *Logins) Stats() LoginStats {
	return LoginStats{Throttled: l.throttled.Load(), Failed: l.failed.Load()}
}
