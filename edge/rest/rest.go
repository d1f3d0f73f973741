// Package rest is the REST/JSON connector: it polls an HTTP(S) endpoint of
// an ERP, MES or any system on an interval and takes many tags out of one
// JSON answer with path expressions.
package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/edge/jsonpath"
	"github.com/calx-iiot/calx/uns"
)

// Settings of a REST/JSON source.
type Settings struct {
	URL      string            `yaml:"url"`
	Headers  map[string]string `yaml:"headers"`
	Bearer   string            `yaml:"bearer_token"`
	Username string            `yaml:"username"`
	Password string            `yaml:"password"`
	Interval time.Duration     `yaml:"interval"`
	Timeout  time.Duration     `yaml:"timeout"`
	Tags     []Tag             `yaml:"tags"`
}

// Tag takes one value out of the answer.
type Tag struct {
	Name string `yaml:"name"`
	// Path into the JSON answer: keys separated by dots, array indexes in
	// brackets, e.g. "lines[0].oee" or "kiln.temperatures[2]".
	Path string `yaml:"path"`
	Type string `yaml:"type"` // float64 (default), int64, bool, string
	// Unit, scaling, report by exception (read only: writable is refused).
	connector.TagOptions `yaml:",inline"`

	path jsonpath.Path
	dt   uns.DataType
}

func init() {
	connector.RegisterSettings("rest", nil, New)
}

// Source is the REST connector of one endpoint.
type Source struct {
	s      Settings
	device string
	client *http.Client
	log    *slog.Logger
}

var _ connector.Connector = (*Source)(nil)

// New validates the settings.
func New(device string, s Settings, log *slog.Logger) (*Source, error) {
	if s.Interval == 0 {
		s.Interval = 10 * time.Second
	}
	if s.Timeout == 0 {
		s.Timeout = 10 * time.Second
	}
	var errs []error
	if !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://") {
		errs = append(errs, fmt.Errorf("url %q: want http:// or https://", s.URL))
	}
	if s.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %s: at least 100ms", s.Interval))
	}
	if len(s.Tags) == 0 {
		errs = append(errs, errors.New("tags: at least one"))
	}
	for i := range s.Tags {
		t := &s.Tags[i]
		var err error
		if t.path, err = jsonpath.Parse(t.Path); err != nil {
			errs = append(errs, fmt.Errorf("tags[%d] (%s): %w", i, t.Name, err))
		}
		if t.Type == "" {
			t.Type = "float64"
		}
		if t.dt, err = uns.ParseDataType(t.Type); err != nil {
			errs = append(errs, fmt.Errorf("tags[%d] (%s): %w", i, t.Name, err))
		}
		if err := t.Check(); err != nil {
			errs = append(errs, fmt.Errorf("tags[%d] (%s): %w", i, t.Name, err))
		}
		if t.Writable {
			errs = append(errs, fmt.Errorf("tags[%d] (%s): writable: the REST connector only reads", i, t.Name))
		}
		if t.Interval != 0 {
			errs = append(errs, fmt.Errorf("tags[%d] (%s): interval: the REST connector polls all tags at once, at the source's interval", i, t.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("rest %s: %w", device, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client := &http.Client{Timeout: s.Timeout, CheckRedirect: sameHost}
	return &Source{s: s, device: device, client: client, log: log.With("component", "rest", "device", device)}, nil
}

// Tags declares the source's tags.
func (src *Source) Tags() []connector.TagDef {
	var out []connector.TagDef
	for _, t := range src.s.Tags {
		out = append(out, t.Def(t.Name, t.dt))
	}
	return out
}

// errRetryLater carries how long the server asked to wait.
type errRetryLater struct {
	status int
	after  time.Duration
}

func (e errRetryLater) Error() string { return fmt.Sprintf("HTTP %d, retry later", e.status) }

// Run polls on the interval; 429 and 5xx answers back off (honouring
// Retry-After), other failures make the source lost until it answers.
func (src *Source) Run(ctx context.Context, sink connector.Sink) error {
	backoff := time.Duration(0)
	for {
		wait := src.s.Interval
		rs, err := src.poll(ctx)
		switch {
		case err == nil:
			backoff = 0
			sink.Emit(rs)
		case ctx.Err() != nil:
			return nil
		default:
			sink.Lost(err)
			backoff = min(max(2*backoff, src.s.Interval), 5*time.Minute)
			wait = backoff/2 + rand.N(backoff/2+1)
			var rl errRetryLater
			if errors.As(err, &rl) && rl.after > wait {
				wait = rl.after
			}
			src.log.Warn("poll failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (src *Source) poll(ctx context.Context) ([]connector.Reading, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.s.URL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range src.s.Headers {
		req.Header.Set(k, v)
	}
	if src.s.Bearer != "" {
		req.Header.Set("Authorization", "Bearer "+src.s.Bearer)
	} else if src.s.Username != "" {
		req.SetBasicAuth(src.s.Username, src.s.Password)
	}
	req.Header.Set("Accept", "application/json")
	res, err := src.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rest %s: %w", src.s.URL, err)
	}
	defer res.Body.Close()
	now := time.Now()
	if res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500 {
		after, _ := strconv.Atoi(res.Header.Get("Retry-After"))
		return nil, errRetryLater{status: res.StatusCode, after: time.Duration(after) * time.Second}
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("rest %s: HTTP %d", src.s.URL, res.StatusCode)
	}
	var doc any
	if err := json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("rest %s: answer is not JSON: %w", src.s.URL, err)
	}
	rs := make([]connector.Reading, 0, len(src.s.Tags))
	for _, t := range src.s.Tags {
		v, err := src.value(doc, t)
		q := uns.Good
		if err != nil {
			q = uns.Bad
			src.log.Debug("tag not in the answer", "tag", t.Name, "err", err)
		}
		rs = append(rs, connector.Reading{Tag: t.Name, TS: now, Value: v, Quality: q})
	}
	return rs, nil
}

func (src *Source) value(doc any, t Tag) (uns.Value, error) {
	x, err := t.path.Lookup(doc)
	if err != nil {
		return uns.Null, err
	}
	v, err := jsonpath.Value(x, t.dt)
	if err != nil {
		return uns.Null, err
	}
	return t.ToEng(v), nil
}

// sameHost follows a redirect only to the same scheme and host, and at
// most five: the request carries the device's credentials, which are not
// for another server.
func sameHost(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if req.URL.Host != first.Host || req.URL.Scheme != first.Scheme {
		return fmt.Errorf("redirect to %s://%s refused: not the configured server %s://%s", req.URL.Scheme, req.URL.Host, first.Scheme, first.Host)
	}
	if len(via) >= 5 {
		return errors.New("more than 5 redirects")
	}
	return nil
}
