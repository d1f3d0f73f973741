package web

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Scope is the part of the namespace a user may see and act on: UNS
// prefixes such as limeworks/ghent. Empty means all of it. Outside it a
// path answers as an unknown one would (404), so that a user cannot learn
// what other sites have.
type Scope []string

// ValidateScope checks that each prefix is a UNS path.
func ValidateScope(s Scope) error {
	for i, p := range s {
		if err := uns.Path(p).Validate(); err != nil {
			return fmt.Errorf("scope[%d]: %w", i, err)
		}
	}
	return nil
}

// All reports whether the scope is the whole namespace.
func (s Scope) All() bool { return len(s) == 0 }

// Covers reports whether path p is the prefix of a scope entry or lies
// under one.
func (s Scope) Covers(p string) bool {
	if s.All() {
		return true
	}
	for _, pre := range s {
		if under(p, pre) {
			return true
		}
	}
	return false
}

// Within returns the prefixes to read for the subtree at prefix ("" is the
// whole namespace): prefix itself when the scope covers it, else the
// scope's entries under it. None means the user sees nothing there.
func (s Scope) Within(prefix string) []string {
	if s.Covers(prefix) && (prefix != "" || s.All()) {
		return []string{prefix}
	}
	var out []string
	for i, pre := range s {
		if prefix != "" && !under(pre, prefix) {
			continue
		}
		// An entry under another one is read with it.
		if slices.ContainsFunc(s, func(o string) bool { return o != pre && under(pre, o) }) || slices.Index(s, pre) < i {
			continue
		}
		out = append(out, pre)
	}
	return out
}

// under reports whether p is pre or a path below it.
func under(p, pre string) bool {
	return p == pre || strings.HasPrefix(p, pre) && p[len(pre)] == '/'
}

// scopeOf is the scope of the request's session.
func scopeOf(r *http.Request) Scope {
	sess, _ := r.Context().Value(ctxKey{}).(session)
	return sess.scope
}

// requireWholeScope refuses users with a scope: what the route reads or
// changes (the fleet config as one document, SQL over every table) spans
// every site.
func requireWholeScope(what string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !scopeOf(r).All() {
				writeError(w, http.StatusForbidden, what+" spans every site: not for a user with a scope")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// acrossScope runs query for each prefix the request's scope sees within
// prefix and merges the rows as one query would give them: the newest n
// by at, in time order (each query's rows are in time order).
func acrossScope[T any](r *http.Request, prefix string, n int, at func(T) time.Time, query func(pre string) ([]T, error)) ([]T, error) {
	in := scopeOf(r).Within(prefix)
	out := []T{}
	for _, pre := range in {
		got, err := query(pre)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	if len(in) > 1 {
		slices.SortStableFunc(out, func(a, b T) int { return at(a).Compare(at(b)) })
		out = out[max(0, len(out)-n):]
	}
	return out, nil
}
