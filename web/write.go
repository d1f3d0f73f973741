package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/uns"
)

// writeTimeout is how long a write waits for the device to report the new value.
const writeTimeout = 10 * time.Second

// write sets a writable tag: the command goes to the edge, and the answer
// waits until the tag reports the written value (504 when it does not).
// Every attempt is in the audit log.
func (s *Server) write(w http.ResponseWriter, r *http.Request) {
	sess, _ := r.Context().Value(ctxKey{}).(session)
	var req struct {
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := decodeBody(r, &req, `{"path": "...", "value": ...}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := uns.Path(req.Path)
	if err := p.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "path: "+err.Error())
		return
	}
	tag, ok := s.c.tags.Get(p)
	if !ok || !sess.scope.Covers(string(p)) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("path: no tag %q in the namespace", p))
		return
	}
	v, err := parseValue(req.Value, tag.DataType)
	if err != nil {
		writeError(w, http.StatusBadRequest, "value: "+err.Error())
		return
	}
	audit := func(result string) {
		e := historian.AuditEntry{TS: time.Now(), User: sess.user, Action: "write", Path: string(p), Value: string(req.Value), Result: result}
		if err := s.c.audit.Audit(context.WithoutCancel(r.Context()), e); err != nil {
			s.log.Error("audit entry not stored", "err", err)
		}
	}
	start := time.Now()
	if err := s.c.writer.Write(p, v); err != nil {
		audit("refused: " + err.Error())
		switch st := statusOf(err); st {
		case http.StatusConflict:
			writeError(w, st, fmt.Sprintf("path: tag %q is read-only", p))
		case http.StatusBadRequest:
			writeError(w, st, "value: "+err.Error())
		case http.StatusServiceUnavailable:
			writeError(w, st, fmt.Sprintf("path: the edge node or device of %q is offline", p))
		default:
			writeError(w, http.StatusInternalServerError, "write failed")
		}
		return
	}
	deadline := time.NewTimer(writeTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			audit("cancelled by the client")
			return
		case <-deadline.C:
			audit("timeout")
			writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("the device did not report the new value of %q within %s", p, writeTimeout))
			return
		case <-tick.C:
			t, _ := s.c.tags.Get(p)
			if t.HasVal && !t.TS.Before(start.Truncate(time.Millisecond)) && t.Value.Equal(v) {
				audit("ok")
				writeJSON(w, http.StatusOK, map[string]any{"path": p, "value": t.Value.Typed(t.DataType), "ts": t.TS.UTC()})
				return
			}
		}
	}
}

// parseValue reads a JSON value as a tag's datatype.
func parseValue(raw json.RawMessage, dt uns.DataType) (uns.Value, error) {
	if len(raw) == 0 {
		return uns.Null, errors.New("required")
	}
	var x any
	if err := json.Unmarshal(raw, &x); err != nil {
		return uns.Null, err
	}
	switch dt {
	case uns.TypeFloat64:
		if f, ok := x.(float64); ok {
			return uns.Float(f), nil
		}
	case uns.TypeInt64:
		if i, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return uns.Int(i), nil
		}
	case uns.TypeBool:
		if b, ok := x.(bool); ok {
			return uns.Bool(b), nil
		}
	case uns.TypeString:
		if s, ok := x.(string); ok {
			return uns.String(s), nil
		}
	}
	return uns.Null, fmt.Errorf("%s is not a %s", raw, dt)
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %q: want a whole number from 1 to 10000", l))
			return
		}
		limit = n
	}
	entries, err := s.c.audit.AuditLog(r.Context(), limit)
	if err != nil {
		s.log.Error("audit log query failed", "err", err)
		writeError(w, http.StatusInternalServerError, "audit log query failed")
		return
	}
	if entries == nil {
		entries = []historian.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(entries), "entries": entries})
}
