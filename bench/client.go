package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// api talks to the cloud's HTTP API as a user.
type api struct {
	base  string
	token string
	http  *http.Client
}

func (a *api) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	res, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (a *api) login(ctx context.Context, user, password string) error {
	var out struct {
		Token string `json:"token"`
	}
	if err := a.do(ctx, "POST", "/api/v1/login", map[string]string{"username": user, "password": password}, &out); err != nil {
		return fmt.Errorf("login as %s: %w", user, err)
	}
	a.token = out.Token
	return nil
}

// count runs a one-number SQL query on the historian.
func (a *api) count(ctx context.Context, query string) (int64, error) {
	var out struct {
		Rows [][]any `json:"rows"`
	}
	if err := a.do(ctx, "POST", "/api/v1/sql", map[string]any{"query": query, "limit": 1}, &out); err != nil {
		return 0, err
	}
	if len(out.Rows) != 1 || len(out.Rows[0]) != 1 {
		return 0, fmt.Errorf("sql %q: %v", query, out.Rows)
	}
	f, ok := out.Rows[0][0].(float64)
	if !ok {
		return 0, fmt.Errorf("sql %q: not a number: %v", query, out.Rows[0][0])
	}
	return int64(f), nil
}

// scrape is one reading of the cloud's /metrics.
type scrape struct {
	at   time.Time
	fams map[string]*dto.MetricFamily
}

func (a *api) scrape(ctx context.Context) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/metrics", nil)
	if err != nil {
		return scrape{}, err
	}
	res, err := a.http.Do(req)
	if err != nil {
		return scrape{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return scrape{}, fmt.Errorf("GET /metrics: %s", res.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		return scrape{}, fmt.Errorf("GET /metrics: %w", err)
	}
	return scrape{at: time.Now(), fams: fams}, nil
}

// sum adds the values of a family's series whose labels include labels
// ("name=value"); counters and gauges only.
func (s scrape) sum(family string, labels ...string) float64 {
	var total float64
	for _, m := range s.fams[family].GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return total
}

// max is the largest value of a family's series.
func (s scrape) max(family string) float64 {
	var mx float64
	for _, m := range s.fams[family].GetMetric() {
		mx = math.Max(mx, m.GetCounter().GetValue()+m.GetGauge().GetValue())
	}
	return mx
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for _, want := range labels {
		name, value, _ := strings.Cut(want, "=")
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == name && l.GetValue() == value {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// histogram is the cumulative bucket counts of a histogram family.
type histogram struct {
	bounds []float64
	counts []uint64
	total  uint64
}

func (s scrape) histogram(family string) histogram {
	var h histogram
	ms := s.fams[family].GetMetric()
	if len(ms) == 0 {
		return h
	}
	hist := ms[0].GetHistogram()
	for _, b := range hist.GetBucket() {
		h.bounds = append(h.bounds, b.GetUpperBound())
		h.counts = append(h.counts, b.GetCumulativeCount())
	}
	h.total = hist.GetSampleCount()
	return h
}

// since is the histogram of the observations made after old.
func (h histogram) since(old histogram) histogram {
	out := histogram{bounds: h.bounds, counts: slices.Clone(h.counts), total: h.total - old.total}
	if len(old.counts) == len(h.counts) {
		for i := range out.counts {
			out.counts[i] -= old.counts[i]
		}
	}
	return out
}

// quantile estimates the q-quantile, interpolating within its bucket.
// Beyond the last bucket it answers the last bound.
func (h histogram) quantile(q float64) float64 {
	if h.total == 0 {
		return math.NaN()
	}
	rank := q * float64(h.total)
	var lower float64
	var below uint64
	for i, c := range h.counts {
		if float64(c) >= rank {
			inBucket := c - below
			if inBucket == 0 {
				return h.bounds[i]
			}
			return lower + (h.bounds[i]-lower)*(rank-float64(below))/float64(inBucket)
		}
		lower, below = h.bounds[i], c
	}
	return lower
}

// maxBound is the upper bound of the highest bucket with observations: the
// largest observation is at most this.
func (h histogram) maxBound() float64 {
	prev := uint64(0)
	mx := math.NaN()
	for i, c := range h.counts {
		if c > prev {
			mx = h.bounds[i]
		}
		prev = c
	}
	if h.total > prev {
		return math.Inf(1)
	}
	return mx
}

// liveReader follows GET /api/v1/live for the edges under prefixes and
// records, for each live value, the time from its sample to its arrival
// here.
type liveReader struct {
	prefixes []string

	mu        sync.Mutex
	recording bool
	delays    []float64 // seconds
	values    int64     // of the bench's groups, recorded or not
	overflow  int64
}

const maxLiveDelays = 5_000_000

func (l *liveReader) record(on bool) {
	l.mu.Lock()
	l.recording = on
	l.mu.Unlock()
}

func (l *liveReader) run(ctx context.Context, a *api, ready chan<- error) {
	q := url.Values{"prefix": l.prefixes}
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/api/v1/live?"+q.Encode(), nil)
	if err != nil {
		ready <- err
		return
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	res, err := a.http.Do(req)
	if err != nil {
		ready <- fmt.Errorf("live: %w", err)
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		ready <- fmt.Errorf("live: %s", res.Status)
		return
	}
	ready <- nil
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var batch []struct {
		Path       string    `json:"path"`
		TS         time.Time `json:"ts"`
		Historical bool      `json:"historical"`
	}
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		now := time.Now()
		batch = batch[:0]
		if err := json.Unmarshal(line[len("data: "):], &batch); err != nil {
			continue
		}
		l.mu.Lock()
		for _, v := range batch {
			if v.Historical || !l.ours(v.Path) {
				continue
			}
			l.values++
			if !l.recording {
				continue
			}
			if len(l.delays) >= maxLiveDelays {
				l.overflow++
				continue
			}
			l.delays = append(l.delays, now.Sub(v.TS).Seconds())
		}
		l.mu.Unlock()
	}
}

func (l *liveReader) ours(path string) bool {
	for _, p := range l.prefixes {
		if strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// quantiles of the recorded delays: p50, p99, max.
func (l *liveReader) quantiles() (p50, p99, mx float64, n int) {
	l.mu.Lock()
	d := slices.Clone(l.delays)
	l.mu.Unlock()
	if len(d) == 0 {
		return math.NaN(), math.NaN(), math.NaN(), 0
	}
	slices.Sort(d)
	at := func(q float64) float64 { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return at(0.5), at(0.99), d[len(d)-1], len(d)
}

func (l *liveReader) count() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.values
}
