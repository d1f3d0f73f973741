package cloud

import (
	"testing"
	"time"

	"github.com/calx-iiot/calx/transform"
)

// The hub decodes only what its feeds follow, by whole path segments, and
// everything as soon as one feed follows every path.
func TestHubKeepsWhatFeedsFollow(t *testing.T) {
	h := &Hub{subs: map[*LiveSub]struct{}{}}
	if _, watched := h.keeper(); watched {
		t.Fatal("watched without a feed")
	}
	site := h.Subscribe("limeworks/ghent", "limeworks/lyon/kilns/line1/kiln1/o2")
	keep, watched := h.keeper()
	if !watched || keep == nil {
		t.Fatalf("one feed with prefixes: keep %v, watched %v", keep != nil, watched)
	}
	for p, want := range map[string]bool{
		"limeworks/ghent/kilns/line1/kiln1/o2": true,
		"limeworks/ghent":                      true,
		"limeworks/ghentx/a":                   false,
		"limeworks/lyon/kilns/line1/kiln1/o2":  true,
		"limeworks/lyon/kilns/line1/kiln1/co":  false,
		"limeworks/lyon/kilns/line1/kiln1/o2x": false,
	} {
		if keep([]byte(p)) != want {
			t.Errorf("%s kept: %v, want %v", p, !want, want)
		}
	}
	everything := h.Subscribe()
	if keep, _ := h.keeper(); keep != nil {
		t.Error("a feed of every path still filters")
	}
	h.Unsubscribe(everything)
	if keep, _ := h.keeper(); keep == nil || keep([]byte("limeworks/lyon/a")) {
		t.Error("filter not back after the feed of every path left")
	}
	h.Unsubscribe(site)
	if _, watched := h.keeper(); watched {
		t.Error("watched after the last feed left")
	}
}

// A transition told twice (a replay after the transforms moved to another
// node) reaches a live view once; another event of the same alarm does.
func TestHubTellsATransitionOnce(t *testing.T) {
	h := &Hub{subs: map[*LiveSub]struct{}{}}
	view := h.Subscribe()
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	raise := transform.Transition{Alarm: "a/b/_alarms/co_high", Event: "raise", TS: at}
	clear := transform.Transition{Alarm: "a/b/_alarms/co_high", Event: "clear", TS: at.Add(time.Second)}
	h.Alarms([]transform.Transition{raise})
	h.Alarms([]transform.Transition{raise, clear})
	var got []string
	for len(view.Alarms) > 0 {
		for _, tr := range <-view.Alarms {
			got = append(got, tr.Event)
		}
	}
	if len(got) != 2 || got[0] != "raise" || got[1] != "clear" {
		t.Fatalf("told %v, want raise and clear once each", got)
	}
}
