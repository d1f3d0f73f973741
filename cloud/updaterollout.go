package cloud

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/release"
)

// A rollout of a release goes in waves: a canary set first, the rest once
// every canary edge has run the release, online, for HealthyFor. An edge
// that refuses the build or rolls it back fails its wave, and so does one
// not on the release within Timeout of its wave's start; a failed wave
// stops the rollout, and says why. One node drives the rollouts (in a
// cluster, the primary host's); their state is kept in
// CALX_UPDATE_ROLLOUTS, so that the next node goes on.

// Defaults of a rollout.
const (
	DefaultHealthyFor    = 10 * time.Minute
	DefaultUpdateTimeout = 30 * time.Minute
)

// States of a rollout and of its waves.
const (
	RolloutRunning = "running"
	RolloutDone    = "done"
	RolloutFailed  = "failed"
	// RolloutSuperseded: a later rollout took over some of its edges.
	RolloutSuperseded = "superseded"
	WaveWaiting       = "waiting"
	WaveRunning       = "running"
	WaveHolding       = "holding" // every edge is on the release; it has to hold
)

// UpdateRolloutRequest asks for a release on a selection of edges: all,
// one edge, a site's or a template's, with a canary set named or counted.
type UpdateRolloutRequest struct {
	Version     string   `json:"version"`
	All         bool     `json:"all,omitempty"`
	Edge        string   `json:"edge,omitempty"`
	Site        string   `json:"site,omitempty"`
	Template    string   `json:"template,omitempty"`
	Canary      []string `json:"canary,omitempty"`
	CanaryCount int      `json:"canary_count,omitempty"`
	// HealthyFor is how long the canary must hold (Go duration; default
	// 10m); Timeout how long a wave may take (default 30m).
	HealthyFor string `json:"healthy_for,omitempty"`
	Timeout    string `json:"timeout,omitempty"`
}

// UpdateRollout is a release going to edges, wave by wave.
type UpdateRollout struct {
	ID         string       `json:"id"`
	Version    string       `json:"version"`
	Selection  string       `json:"selection"`
	HealthyFor string       `json:"healthy_for"`
	Timeout    string       `json:"timeout"`
	Waves      []UpdateWave `json:"waves"`
	State      string       `json:"state"`
	Reason     string       `json:"reason,omitempty"`
	By         string       `json:"by"`
	At         time.Time    `json:"at"`
	Finished   time.Time    `json:"finished,omitzero"`

	healthyFor, timeout time.Duration
	// rev is the bucket's revision of the rollout as read: a save over a
	// later one (another node's) fails, and is done again from it.
	rev uint64
}

// UpdateWave is one wave of a rollout.
type UpdateWave struct {
	Name         string    `json:"name"`
	Edges        []string  `json:"edges"`
	State        string    `json:"state"`
	Started      time.Time `json:"started,omitzero"`
	HealthySince time.Time `json:"healthy_since,omitzero"`
	// Reached is when every edge of the wave first ran the release;
	// LateSince when one fell behind after that.
	Reached   time.Time `json:"reached,omitzero"`
	LateSince time.Time `json:"late_since,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

// EdgeUpdate is how far one edge of a rollout is.
type EdgeUpdate struct {
	Edge    string  `json:"edge"`
	Wave    string  `json:"wave"`
	Online  bool    `json:"online"`
	Running string  `json:"running,omitempty"` // the version it runs
	Step    string  `json:"step,omitempty"`    // of its update to the release
	Percent float64 `json:"percent,omitempty"`
	Error   string  `json:"error,omitempty"`
	State   string  `json:"state"` // waiting, updating, on-release, failed
}

// StartRollout checks a request, stores the rollout and starts its first
// wave.
func (u *Updates) StartRollout(ctx context.Context, req UpdateRolloutRequest, by string) (*UpdateRollout, error) {
	if u.key == nil {
		return nil, ErrUpdatesOff
	}
	if _, err := u.Release(ctx, req.Version); err != nil {
		return nil, err
	}
	r := UpdateRollout{Version: req.Version, State: RolloutRunning, By: by, At: time.Now().UTC()}
	var err error
	if r.healthyFor, err = durationOr(req.HealthyFor, DefaultHealthyFor); err != nil {
		return nil, fmt.Errorf("%w: healthy_for: %v", ErrBadRelease, err)
	}
	if r.timeout, err = durationOr(req.Timeout, DefaultUpdateTimeout); err != nil {
		return nil, fmt.Errorf("%w: timeout: %v", ErrBadRelease, err)
	}
	r.HealthyFor, r.Timeout = r.healthyFor.String(), r.timeout.String()
	edges, sel, err := u.selectEdges(ctx, req)
	if err != nil {
		return nil, err
	}
	r.Selection = sel
	canary := req.Canary
	for _, e := range canary {
		if !slices.Contains(edges, e) {
			return nil, fmt.Errorf("%w: canary %s is not among the edges selected (%s)", ErrBadRelease, e, sel)
		}
	}
	switch {
	case len(canary) > 0 && req.CanaryCount > 0:
		return nil, fmt.Errorf("%w: name the canary edges or count them, not both", ErrBadRelease)
	case req.CanaryCount < 0 || req.CanaryCount >= len(edges) && req.CanaryCount > 0:
		return nil, fmt.Errorf("%w: canary_count %d: from 1 to %d, fewer than the %d edges selected", ErrBadRelease, req.CanaryCount, len(edges)-1, len(edges))
	case req.CanaryCount > 0:
		canary = edges[:req.CanaryCount]
	}
	rest := slices.DeleteFunc(slices.Clone(edges), func(e string) bool { return slices.Contains(canary, e) })
	if len(canary) > 0 {
		r.Waves = append(r.Waves, UpdateWave{Name: "canary", Edges: slices.Sorted(slices.Values(canary)), State: WaveWaiting})
	}
	if len(rest) > 0 {
		name := "rest"
		if len(canary) == 0 {
			name = "all"
		}
		r.Waves = append(r.Waves, UpdateWave{Name: name, Edges: rest, State: WaveWaiting})
	}
	r.ID = fmt.Sprintf("u%s-%d-%04x", strings.ReplaceAll(req.Version, ".", "_"), time.Now().UnixMilli(), rand.N(0x10000))
	if err := u.supersede(ctx, &r, edges); err != nil {
		return nil, err
	}
	if err := u.save(ctx, &r); err != nil {
		return nil, err
	}
	u.log.Info("update rollout", "id", r.ID, "version", r.Version, "edges", len(edges), "canary", len(canary))
	if u.runs() { // else the node that drives the rollouts starts it within a second
		u.evaluate(ctx, time.Now())
	}
	// In a cluster a read may come from a copy of the bucket that has not
	// got the write yet: the rollout as made stands in for it.
	if got, err := u.Rollout(ctx, r.ID); err == nil {
		return got, nil
	}
	return &r, nil
}

// supersede ends the running rollouts that share an edge with a new one:
// a wave of theirs still waiting would otherwise assign their release over
// the new one's.
func (u *Updates) supersede(ctx context.Context, r *UpdateRollout, edges []string) error {
	u.rollMu.Lock()
	defer u.rollMu.Unlock()
	all, err := u.Rollouts(ctx)
	if err != nil {
		return err
	}
	for _, listed := range all {
		for try := 0; ; try++ {
			old, err := u.load(ctx, listed.ID)
			if err != nil {
				return err
			}
			shared := slices.ContainsFunc(old.Waves, func(w UpdateWave) bool {
				return slices.ContainsFunc(w.Edges, func(e string) bool { return slices.Contains(edges, e) })
			})
			if old.State != RolloutRunning || !shared {
				break
			}
			old.State, old.Reason, old.Finished = RolloutSuperseded, fmt.Sprintf("superseded by %s (release %s)", r.ID, r.Version), time.Now().UTC()
			err = u.save(ctx, old)
			if err == nil {
				u.log.Info("update rollout superseded", "id", old.ID, "by", r.ID)
				break
			}
			if !errors.Is(err, errRolloutChanged) || try == 10 {
				return err
			}
			time.Sleep(100 * time.Millisecond) // the node that drives it saved meanwhile
		}
	}
	return nil
}

func durationOr(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d <= 0 {
		err = errors.New("must be positive")
	}
	return d, err
}

// selectEdges returns the edges a request selects, sorted, and names the
// selection.
func (u *Updates) selectEdges(ctx context.Context, req UpdateRolloutRequest) ([]string, string, error) {
	n := 0
	for _, set := range []bool{req.All, req.Edge != "", req.Site != "", req.Template != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, "", fmt.Errorf("%w: choose one of all, edge, site and template", ErrBadRelease)
	}
	// Edges the host has seen, and, named one by one, those with an
	// account that have not been born yet.
	known := map[string]bool{}
	if u.edges != nil {
		for _, h := range u.edges(time.Now()) {
			known[h.ID] = true
		}
	}
	if req.Edge != "" && u.accounts != nil && slices.Contains(u.accounts(), req.Edge) {
		known[req.Edge] = true
	}
	var picked []string
	sel := "all edges"
	switch {
	case req.Edge != "":
		sel = "edge " + req.Edge
	case req.Site != "":
		sel = "site " + req.Site
	case req.Template != "":
		sel = "template " + req.Template
	}
	head, err := u.fleet.Head(ctx)
	if err != nil {
		return nil, "", err
	}
	if head > 0 {
		c, err := u.fleet.parsed(ctx, head)
		if err != nil {
			return nil, "", err
		}
		for _, e := range edgesOf(c, req.All, req.Edge, req.Site, req.Template) {
			picked = append(picked, e.Key())
		}
	}
	if req.All || req.Edge != "" {
		for k := range known {
			if req.All || k == req.Edge {
				picked = append(picked, k)
			}
		}
	}
	slices.Sort(picked)
	picked = slices.Compact(picked)
	if len(picked) == 0 {
		return nil, "", fmt.Errorf("%w: %s", ErrNoSuchEdges, sel)
	}
	return picked, sel, nil
}

// errRolloutChanged: the rollout changed in the bucket since it was read.
var errRolloutChanged = errors.New("updates: the rollout changed meanwhile")

// save writes a rollout over the revision it was read at (a new one only
// if there is none).
func (u *Updates) save(ctx context.Context, r *UpdateRollout) error {
	b, _ := json.Marshal(r)
	var rev uint64
	var err error
	if r.rev == 0 {
		rev, err = u.rollouts.Create(ctx, r.ID, b)
	} else {
		rev, err = u.rollouts.Update(ctx, r.ID, b, r.rev)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence") {
			return errRolloutChanged
		}
		return fmt.Errorf("updates: %w", err)
	}
	r.rev = rev
	return nil
}

func (u *Updates) load(ctx context.Context, id string) (*UpdateRollout, error) {
	e, err := u.rollouts.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("%w: %q", ErrNoRollout, id)
	}
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	var r UpdateRollout
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("updates: rollout %s: %w", id, err)
	}
	r.rev = e.Revision()
	r.healthyFor, _ = time.ParseDuration(r.HealthyFor)
	r.timeout, _ = time.ParseDuration(r.Timeout)
	return &r, nil
}

// Rollout returns a rollout.
func (u *Updates) Rollout(ctx context.Context, id string) (*UpdateRollout, error) {
	return u.load(ctx, id)
}

// Rollouts lists the rollouts, newest first.
func (u *Updates) Rollouts(ctx context.Context) ([]UpdateRollout, error) {
	lister, err := u.rollouts.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	out := []UpdateRollout{}
	for k := range lister.Keys() {
		if r, err := u.load(ctx, k); err == nil {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b UpdateRollout) int { return b.At.Compare(a.At) })
	return out, nil
}

// Progress is how far each edge of a rollout is.
func (u *Updates) Progress(r *UpdateRollout, now time.Time) []EdgeUpdate {
	byID := u.healthByID(now)
	var out []EdgeUpdate
	for _, w := range r.Waves {
		for _, e := range w.Edges {
			out = append(out, edgeUpdate(e, w, r.Version, byID))
		}
	}
	return out
}

func (u *Updates) healthByID(now time.Time) map[string]EdgeHealth {
	byID := map[string]EdgeHealth{}
	if u.edges != nil {
		for _, h := range u.edges(now) {
			byID[h.ID] = h
		}
	}
	return byID
}

func edgeUpdate(edge string, w UpdateWave, version string, byID map[string]EdgeHealth) EdgeUpdate {
	eu := EdgeUpdate{Edge: edge, Wave: w.Name, State: "waiting"}
	h, ok := byID[edge]
	if !ok {
		if w.State != WaveWaiting {
			eu.State = "updating"
		}
		return eu
	}
	eu.Online, eu.Running = h.Online, release.VersionOf(h.Version)
	if h.Update != nil && h.Update.Version == version {
		eu.Step, eu.Percent, eu.Error = h.Update.Step, h.Update.Percent, h.Update.Error
	}
	switch {
	case eu.Step == release.StepRolledBack || eu.Step == release.StepRefused:
		eu.State = "failed"
	case h.Online && eu.Running == version:
		eu.State = "on-release"
	case w.State != WaveWaiting:
		eu.State = "updating"
	}
	return eu
}

// drive evaluates the running rollouts every second while this node runs
// them.
func (u *Updates) drive(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if u.runs() {
				u.evaluate(ctx, now)
			}
		}
	}
}

// evaluate moves every running rollout on.
func (u *Updates) evaluate(ctx context.Context, now time.Time) {
	u.rollMu.Lock()
	defer u.rollMu.Unlock()
	lister, err := u.rollouts.ListKeys(ctx)
	if err != nil {
		return
	}
	var byID map[string]EdgeHealth
	for k := range lister.Keys() {
		r, err := u.load(ctx, k)
		if err != nil || r.State != RolloutRunning {
			continue
		}
		if byID == nil {
			byID = u.healthByID(now)
		}
		before, _ := json.Marshal(r)
		if err := u.step(ctx, r, byID, now); err != nil {
			if !errors.Is(err, errRolloutChanged) {
				u.log.Warn("update rollout not moved on", "id", r.ID, "err", err)
			}
			continue
		}
		if after, _ := json.Marshal(r); string(after) != string(before) {
			// One that changed meanwhile (superseded) is judged again from
			// what it is now at the next round; an assignment made in this
			// one is made again then, which changes nothing.
			if err := u.save(ctx, r); err != nil && !errors.Is(err, errRolloutChanged) {
				u.log.Warn("update rollout not saved", "id", r.ID, "err", err)
			}
		}
	}
}

// step moves a rollout on: starts its next wave, or judges the current one.
func (u *Updates) step(ctx context.Context, r *UpdateRollout, byID map[string]EdgeHealth, now time.Time) error {
	i := slices.IndexFunc(r.Waves, func(w UpdateWave) bool { return w.State != RolloutDone })
	if i < 0 {
		r.State, r.Finished = RolloutDone, now.UTC()
		u.log.Info("update rollout done", "id", r.ID, "version", r.Version)
		return nil
	}
	w := &r.Waves[i]
	if w.State == WaveWaiting {
		rel, err := u.Release(ctx, r.Version)
		if err != nil {
			return err
		}
		// The wave is claimed in the bucket before its edges are told: a
		// rollout superseded meanwhile (on another node) assigns nothing.
		w.State, w.Started = WaveRunning, now.UTC()
		if err := u.save(ctx, r); err != nil {
			return err
		}
		a := release.Assignment{Version: r.Version, Rollout: r.ID, Builds: rel.Builds}
		for _, e := range w.Edges {
			if err := u.assign(ctx, e, a); err != nil {
				return err
			}
		}
		u.log.Info("update wave started", "id", r.ID, "wave", w.Name, "edges", len(w.Edges))
		return nil
	}
	var late []string
	for _, e := range w.Edges {
		eu := edgeUpdate(e, *w, r.Version, byID)
		switch eu.State {
		case "failed":
			u.fail(r, w, now, fmt.Sprintf("%s %s: %s", e, eu.Step, cmp.Or(eu.Error, "no cause given")))
			return nil
		case "on-release":
		default:
			what := "offline"
			if eu.Online {
				what = "running " + cmp.Or(eu.Running, "an unknown version")
				if eu.Step != "" {
					what += fmt.Sprintf(", %s", eu.Step)
					if eu.Step == release.StepDownloading {
						what += fmt.Sprintf(" %.0f%%", eu.Percent)
					}
				}
			}
			late = append(late, e+" ("+what+")")
		}
	}
	if len(late) > 0 {
		w.State, w.HealthySince = WaveRunning, time.Time{}
		// Timed from the wave's start until its edges first reach the
		// release; after that, from when one fell behind again (a short
		// disconnect during the hold restarts the hold, no more).
		since := w.Started
		if !w.Reached.IsZero() {
			if w.LateSince.IsZero() {
				w.LateSince = now.UTC()
			}
			since = w.LateSince
		}
		if now.Sub(since) > r.timeout {
			u.fail(r, w, now, fmt.Sprintf("not on %s within %s: %s", r.Version, r.Timeout, strings.Join(late, ", ")))
		}
		return nil
	}
	w.LateSince = time.Time{}
	if w.Reached.IsZero() {
		w.Reached = now.UTC()
	}
	if w.HealthySince.IsZero() {
		w.State, w.HealthySince = WaveHolding, now.UTC()
	}
	if now.Sub(w.HealthySince) >= r.healthyFor {
		w.State = RolloutDone
		u.log.Info("update wave done", "id", r.ID, "wave", w.Name)
		if i == len(r.Waves)-1 {
			r.State, r.Finished = RolloutDone, now.UTC()
			u.log.Info("update rollout done", "id", r.ID, "version", r.Version)
		}
	}
	return nil
}

func (u *Updates) fail(r *UpdateRollout, w *UpdateWave, now time.Time, why string) {
	w.State, w.Reason = RolloutFailed, why
	r.State, r.Finished = RolloutFailed, now.UTC()
	r.Reason = fmt.Sprintf("wave %s failed: %s", w.Name, why)
	u.log.Warn("update rollout stopped", "id", r.ID, "reason", r.Reason)
}
