package rest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/uns"
)

func TestOneRequestManyTags(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(401)
			return
		}
		requests.Add(1)
		fmt.Fprint(w, `{"order":{"id":"PO-4711","qty":"120","done":false},"lines":[{"oee":0.81},{"oee":0.77}]}`)
	}))
	t.Cleanup(srv.Close)
	src, err := New("mes", Settings{URL: srv.URL, Bearer: "secret", Interval: 100 * time.Millisecond, Tags: []Tag{
		{Name: "order", Path: "order.id", Type: "string"},
		{Name: "qty", Path: "order.qty", Type: "int64"},
		{Name: "done", Path: "order.done", Type: "bool"},
		{Name: "oee2", Path: "lines[1].oee", TagOptions: connector.TagOptions{Scale: 100, Unit: "%"}},
		{Name: "missing", Path: "lines[5].oee"},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, src)
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := s.Get("oee2"); !ok {
			return fmt.Errorf("no values yet")
		}
		return nil
	})
	for tag, want := range map[string]uns.Value{"order": uns.String("PO-4711"), "qty": uns.Int(120), "done": uns.Bool(false), "oee2": uns.Float(77)} {
		if r, _ := s.Get(tag); !r.Value.Equal(want) || r.Quality != uns.Good {
			t.Errorf("%s = %+v %v, want %+v", tag, r.Value, r.Quality, want)
		}
	}
	if r, _ := s.Get("missing"); r.Quality != uns.Bad {
		t.Errorf("a path not in the answer: quality %v", r.Quality)
	}
	time.Sleep(250 * time.Millisecond)
	if n := requests.Load(); n > 5 {
		t.Errorf("%d requests in ~350ms at a 100ms interval", n)
	}
}

// 429 and 5xx back off, honouring Retry-After; the source is lost meanwhile
// and comes back when the server answers.
func TestBackOffOnTooManyRequests(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, `{"v": 3}`)
	}))
	t.Cleanup(srv.Close)
	src, err := New("erp", Settings{URL: srv.URL, Interval: 100 * time.Millisecond, Tags: []Tag{{Name: "v", Path: "v"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := edgetest.Run(t, src)
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if r, _ := s.Get("v"); !r.Value.Equal(uns.Float(3)) {
			return fmt.Errorf("v = %+v", r.Value)
		}
		return nil
	})
	if lost := s.Losses(); lost != 1 {
		t.Errorf("lost reported %d times", lost)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("retried after %s, the server asked for 1s", waited)
	}
}

func TestSettingsErrors(t *testing.T) {
	for name, s := range map[string]Settings{
		"url":   {URL: "ftp://x", Tags: []Tag{{Name: "a", Path: "a"}}},
		"path":  {URL: "http://x", Tags: []Tag{{Name: "a", Path: "a[x]"}}},
		"type":  {URL: "http://x", Tags: []Tag{{Name: "a", Path: "a", Type: "complex"}}},
		"none":  {URL: "http://x"},
		"empty": {URL: "http://x", Tags: []Tag{{Name: "a"}}},
	} {
		if _, err := New("d", s, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSampleConfig(t *testing.T) {
	edgetest.SampleConfig(t, "sample.yaml", func(s Settings) error {
		_, err := New("sample", s, nil)
		return err
	})
}

// A redirect is followed only to the configured server: another host
// never gets the request, with or without the device's credentials.
func TestNoRedirectToAnotherHost(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		fmt.Fprint(w, `{"v":2}`)
	}))
	t.Cleanup(other.Close)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, srv.URL+"/here", http.StatusFound)
		case "/away":
			http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
		case "/here":
			fmt.Fprint(w, `{"v":1}`)
		}
	}))
	t.Cleanup(srv.Close)
	run := func(path string) *edgetest.Sink {
		src, err := New("mes", Settings{URL: srv.URL + path, Bearer: "secret", Interval: 100 * time.Millisecond, Tags: []Tag{{Name: "v", Path: "v"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return edgetest.Run(t, src)
	}
	moved := run("/moved")
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if r, _ := moved.Get("v"); !r.Value.Equal(uns.Float(1)) {
			return fmt.Errorf("v = %+v", r.Value)
		}
		return nil
	})
	away := run("/away")
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if away.Losses() == 0 {
			return fmt.Errorf("the source is not lost")
		}
		return nil
	})
	if _, ok := away.Get("v"); ok {
		t.Fatal("a value came through the redirect to another host")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the other host got %d requests", n)
	}
}
