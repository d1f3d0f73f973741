package web

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/uns"
)

// Limits of the history API.
const (
	maxHistoryPaths   = 20
	maxHistoryBuckets = 100000
	maxChartPoints    = 20000
	maxLatest         = 100000
)

// historyQuery is a parsed history request.
type historyQuery struct {
	paths    []uns.Path
	from, to time.Time
	limit    int
	after    time.Time // raw paging: points after this time
	agg      string
	interval time.Duration
	points   int
	csv      bool
	parquet  bool // raw points only
}

// parseHistory checks every parameter; the error names the one at fault.
func (s *Server) parseHistory(r *http.Request) (*historyQuery, error) {
	q := r.URL.Query()
	hq := &historyQuery{limit: maxHistoryPoints}
	if len(q["path"]) == 0 {
		return nil, errors.New("path: required, the UNS path of a tag (repeat path= for several)")
	}
	if len(q["path"]) > maxHistoryPaths {
		return nil, fmt.Errorf("path: %d paths, more than the limit of %d per request", len(q["path"]), maxHistoryPaths)
	}
	for _, p := range q["path"] {
		if err := uns.Path(p).Validate(); err != nil {
			return nil, fmt.Errorf("path: %w", err)
		}
		hq.paths = append(hq.paths, uns.Path(p))
	}
	var err error
	if hq.to, err = parseTime(q.Get("to"), "to", time.Now()); err != nil {
		return nil, err
	}
	if hq.from, err = parseTime(q.Get("from"), "from", hq.to.Add(-time.Hour)); err != nil {
		return nil, err
	}
	if hq.from.After(hq.to) {
		return nil, errors.New("from: must not be after to")
	}
	if hq.to.Sub(hq.from) > maxHistoryRange {
		return nil, fmt.Errorf("from/to: range %s is longer than the limit of %s", hq.to.Sub(hq.from), maxHistoryRange)
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxHistoryPoints {
			return nil, fmt.Errorf("limit: %q: want a whole number from 1 to %d", l, maxHistoryPoints)
		}
		hq.limit = n
	}
	if a := q.Get("after"); a != "" {
		if hq.after, err = parseTime(a, "after", time.Time{}); err != nil {
			return nil, err
		}
	}
	switch f := q.Get("format"); f {
	case "", "json":
	case "csv":
		hq.csv = true
	case "parquet":
		hq.parquet = true
	default:
		return nil, fmt.Errorf("format: %q: want json, csv or parquet", f)
	}
	hq.agg = q.Get("agg")
	iv := q.Get("interval")
	if hq.agg != "" {
		if !slices.Contains(historian.Aggs, hq.agg) {
			return nil, fmt.Errorf("agg: %q: want one of %s", hq.agg, strings.Join(historian.Aggs, ", "))
		}
		if iv == "" {
			return nil, errors.New("interval: required with agg, a duration such as 1m or 15s")
		}
		if hq.interval, err = time.ParseDuration(iv); err != nil || hq.interval < time.Millisecond {
			return nil, fmt.Errorf("interval: %q: want a duration of at least 1ms, such as 1m or 15s", iv)
		}
		if n := hq.to.Sub(hq.from) / hq.interval; n > maxHistoryBuckets {
			return nil, fmt.Errorf("interval: %s over %s makes %d buckets, more than the limit of %d", hq.interval, hq.to.Sub(hq.from), n, maxHistoryBuckets)
		}
		if !hq.to.After(hq.from) {
			return nil, errors.New("from/to: an aggregate needs to after from")
		}
		for _, p := range hq.paths {
			if t, ok := s.c.tags.Get(p); ok && t.DataType == uns.TypeString && hq.agg != historian.AggCount {
				return nil, fmt.Errorf("agg: %s of %s, a string tag: only count", hq.agg, p)
			}
		}
	} else if iv != "" {
		return nil, errors.New("interval: only with agg")
	}
	if hq.parquet && (hq.agg != "" || q.Get("points") != "") {
		return nil, errors.New("format: parquet is for raw points, not with agg or points")
	}
	if pts := q.Get("points"); pts != "" {
		if hq.agg != "" {
			return nil, errors.New("points: not with agg; ask for one or the other")
		}
		n, err := strconv.Atoi(pts)
		if err != nil || n < 2 || n > maxChartPoints {
			return nil, fmt.Errorf("points: %q: want a whole number from 2 to %d", pts, maxChartPoints)
		}
		hq.points = n
	}
	return hq, nil
}

// history answers raw points (paged), aggregates per bucket aligned across
// paths, or points downsampled for a chart; as JSON or CSV.
func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	hq, err := s.parseHistory(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	for _, p := range hq.paths {
		if !scopeOf(r).Covers(string(p)) {
			s.historyFailed(w, p, historian.ErrUnknownTag)
			return
		}
	}
	switch {
	case hq.parquet:
		s.historyParquet(w, r, hq)
	case hq.agg != "":
		s.historyAgg(w, r, hq)
	default:
		s.historyPoints(w, r, hq)
	}
}

func (s *Server) historyFailed(w http.ResponseWriter, p uns.Path, err error) {
	if statusOf(err) == http.StatusNotFound {
		writeError(w, http.StatusNotFound, fmt.Sprintf("path: no tag %q in the history", p))
		return
	}
	s.log.Error("history query failed", "path", p, "err", err)
	writeError(w, http.StatusInternalServerError, "history query failed")
}

type seriesJSON struct {
	Path      uns.Path    `json:"path"`
	Unit      string      `json:"unit,omitempty"`
	Count     int         `json:"count"`
	Truncated bool        `json:"truncated,omitempty"`
	Next      *time.Time  `json:"next,omitempty"` // pass as after= for the next page
	Points    []pointJSON `json:"points"`
}

func (s *Server) historyPoints(w http.ResponseWriter, r *http.Request, hq *historyQuery) {
	var series []seriesJSON
	for _, p := range hq.paths {
		var pts []historian.Point
		var err error
		from := hq.from
		if hq.points > 0 {
			pts, err = s.c.history.Downsample(r.Context(), p, hq.from, hq.to, hq.points)
		} else {
			if !hq.after.IsZero() && hq.after.After(from) {
				from = hq.after.Add(time.Microsecond) // the history keeps microseconds
			}
			pts, err = s.c.history.History(r.Context(), p, from, hq.to, hq.limit+1)
		}
		if err != nil {
			s.historyFailed(w, p, err)
			return
		}
		sj := seriesJSON{Path: p}
		if hq.points == 0 && len(pts) > hq.limit {
			pts = pts[:hq.limit]
			sj.Truncated = true
			next := pts[len(pts)-1].TS
			sj.Next = &next
		}
		dt := uns.TypeUnknown
		if t, ok := s.c.tags.Get(p); ok {
			dt, sj.Unit = t.DataType, t.Unit
		}
		sj.Points = make([]pointJSON, len(pts))
		for i, pt := range pts {
			sj.Points[i] = pointJSON{TS: pt.TS, Value: pt.Value.Typed(dt), Quality: pt.Quality}
		}
		sj.Count = len(sj.Points)
		series = append(series, sj)
	}
	if hq.csv {
		cw := startCSV(w, "history.csv")
		_ = cw.Write([]string{"path", "ts", "value", "quality"})
		for _, sj := range series {
			for _, pt := range sj.Points {
				_ = cw.Write([]string{string(sj.Path), pt.TS.Format(time.RFC3339Nano), fmt.Sprint(nullable(pt.Value)), pt.Quality.String()})
			}
		}
		cw.Flush()
		return
	}
	out := map[string]any{"from": hq.from.UTC(), "to": hq.to.UTC(), "series": series}
	if len(series) == 1 {
		// One path: its fields at the top too, as before several paths were asked.
		out["path"], out["unit"], out["count"], out["truncated"], out["points"] = series[0].Path, series[0].Unit, series[0].Count, series[0].Truncated, series[0].Points
		if series[0].Next != nil {
			out["next"] = series[0].Next
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type bucketJSON struct {
	TS     time.Time  `json:"ts"`
	Values []*float64 `json:"values"` // one per path, in the order asked
}

func (s *Server) historyAgg(w http.ResponseWriter, r *http.Request, hq *historyQuery) {
	var buckets []bucketJSON
	for k, p := range hq.paths {
		bs, err := s.c.history.Aggregate(r.Context(), p, hq.from, hq.to, hq.interval, hq.agg)
		if err != nil {
			s.historyFailed(w, p, err)
			return
		}
		if buckets == nil {
			buckets = make([]bucketJSON, len(bs))
			for i, b := range bs {
				buckets[i] = bucketJSON{TS: b.TS, Values: make([]*float64, len(hq.paths))}
			}
		}
		for i, b := range bs {
			buckets[i].Values[k] = b.Value
		}
	}
	if hq.csv {
		cw := startCSV(w, "history-"+hq.agg+".csv")
		head := []string{"ts"}
		for _, p := range hq.paths {
			head = append(head, string(p))
		}
		_ = cw.Write(head)
		for _, b := range buckets {
			row := []string{b.TS.Format(time.RFC3339Nano)}
			for _, v := range b.Values {
				if v == nil {
					row = append(row, "")
				} else {
					row = append(row, strconv.FormatFloat(*v, 'g', -1, 64))
				}
			}
			_ = cw.Write(row)
		}
		cw.Flush()
		return
	}
	units := make([]string, len(hq.paths)) // one per path, as the values
	for k, p := range hq.paths {
		if t, ok := s.c.tags.Get(p); ok && hq.agg != "count" { // a count has none
			units[k] = t.Unit
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"paths": hq.paths, "units": units, "from": hq.from.UTC(), "to": hq.to.UTC(), "agg": hq.agg,
		"interval": hq.interval.String(), "count": len(buckets), "buckets": buckets})
}

func startCSV(w http.ResponseWriter, name string) *csv.Writer {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return csv.NewWriter(w)
}

func nullable(v any) any {
	if v == nil {
		return ""
	}
	return v
}

// latest answers the current value of every tag under a prefix.
func (s *Server) latest(w http.ResponseWriter, r *http.Request) {
	prefix, tags, ok := s.listPrefix(w, r)
	if !ok {
		return
	}
	if len(tags) > maxLatest {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("prefix: %d tags under %q, more than the limit of %d; give a longer prefix", len(tags), prefix, maxLatest))
		return
	}
	type latestJSON struct {
		Path    uns.Path    `json:"path"`
		Value   any         `json:"value"`
		TS      *time.Time  `json:"ts,omitempty"`
		Quality uns.Quality `json:"quality"`
		Unit    string      `json:"unit,omitempty"`
	}
	out := make([]latestJSON, 0, len(tags))
	for _, t := range tags {
		l := latestJSON{Path: t.Path, Quality: t.Quality, Unit: t.Unit}
		if t.HasVal {
			l.Value = t.Value.Typed(t.DataType)
			ts := t.TS.UTC()
			l.TS = &ts
		}
		out = append(out, l)
	}
	writeJSON(w, http.StatusOK, map[string]any{"prefix": prefix, "count": len(out), "tags": out})
}

// maxExportPoints bounds a Parquet export (about 10 bytes a point on disk,
// in the exports folder, while it is sent).
const maxExportPoints = 50_000_000

// Limits of the SQL endpoint.
const (
	sqlTimeout     = 10 * time.Second
	sqlDefaultRows = 1000
	sqlMaxRows     = 100000
)

// sqlQuery runs one read-only SELECT on the history: {"query": "...",
// "limit": N}; engineers and admins, every query in the audit log.
func (s *Server) sqlQuery(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Query string `json:"query"`
		Limit int    `json:"limit"`
	}
	if err := decodeBody(r, &req, `{"query": "SELECT ...", "limit": N}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Limit == 0 {
		req.Limit = sqlDefaultRows
	}
	if req.Limit < 1 || req.Limit > sqlMaxRows {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %d: want 1 to %d rows", req.Limit, sqlMaxRows))
		return
	}
	sess, _ := r.Context().Value(ctxKey{}).(session)
	res, err := s.c.history.Query(r.Context(), req.Query, historian.QueryOptions{MaxRows: req.Limit, Timeout: sqlTimeout, Audit: sess.role == RoleAdmin})
	if err != nil {
		s.auditAction(r, "sql", "", "refused: "+err.Error()+": "+req.Query)
		if statusOf(err) == http.StatusBadRequest {
			writeError(w, http.StatusBadRequest, "query: "+err.Error())
			return
		}
		s.log.Error("sql query failed", "err", err)
		writeError(w, http.StatusInternalServerError, "query failed")
		return
	}
	s.auditAction(r, "sql", "", fmt.Sprintf("ok: %d rows: %s", len(res.Rows), req.Query))
	writeJSON(w, http.StatusOK, res)
}

// historyParquet answers the raw points of the paths as a Parquet file.
func (s *Server) historyParquet(w http.ResponseWriter, r *http.Request, hq *historyQuery) {
	f, _, err := s.c.history.ExportParquet(r.Context(), hq.paths, hq.from, hq.to, maxExportPoints)
	if statusOf(err) == http.StatusBadRequest {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		for _, p := range hq.paths {
			if !s.c.history.Known(p) {
				s.historyFailed(w, p, fmt.Errorf("%w: %s", historian.ErrUnknownTag, p))
				return
			}
		}
		s.historyFailed(w, hq.paths[0], err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/vnd.apache.parquet")
	w.Header().Set("Content-Disposition", `attachment; filename="history.parquet"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.Copy(w, f)
}
