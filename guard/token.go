package guard

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
)

// CheckTokenSHA256 checks a configured token digest: empty (no token
// asked) or the 64 hex digits of a SHA-256.
func CheckTokenSHA256(sum string) error {
	if sum == "" {
		return nil
	}
	if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
		return errors.New("token_sha256: want the 64 hex digits of a SHA-256 (printf %s TOKEN | sha256sum)")
	}
	return nil
}

// RequireToken lets a request through only with the bearer token whose
// hex SHA-256 is sum (checked with CheckTokenSHA256); with no sum, every
// request. A token is a long random string, so one fast hash keeps it as
// well as a slow one would.
func RequireToken(sum string, next http.Handler) http.Handler {
	if sum == "" {
		return next
	}
	want, _ := hex.DecodeString(sum)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || subtle.ConstantTimeCompare(got[:], want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="calx"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"a bearer token is required"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
