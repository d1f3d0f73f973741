package edge

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/calx-iiot/calx/release"
)

// Software updates from the cloud (docs/UPDATES.md). The cloud assigns the
// edge a release on its own topic; the edge fetches its platform's build
// piece by piece over its MQTT connection into its data dir (resuming
// where it stopped, within a bandwidth cap), checks its size, SHA-256 and
// signature against the key it pins, puts it in place of its binary
// (keeping the previous one), and restarts into it. The new process must
// connect, be born and send data within a health window, or the previous
// binary is put back and started again. What the edge does is kept in its
// data dir (release.State), so that every process, the supervisor's too,
// knows it; the buffer, bdSeq and applied config stay where they are.

// UpdateOptions let the cloud update the edge's software.
type UpdateOptions struct {
	// PublicKey is the release signing key the edge trusts; nil: it
	// refuses every release.
	PublicKey ed25519.PublicKey
	// Executable is the binary a release replaces; empty: the running one.
	Executable string
	// Window is how long a new binary has to become healthy; default 2m.
	Window time.Duration
	// MaxBytesPerSecond caps the download; 0: no cap.
	MaxBytesPerSecond int64
	// ChunkSize is the piece asked for at once; default 256 KiB.
	ChunkSize int
	// Supervised: a parent process (calx edge --supervise) restarts this
	// one and judges its trial. Otherwise the edge restarts by executing
	// its binary anew and judges its own trial.
	Supervised bool
}

func (o *UpdateOptions) defaults() {
	if o.Window <= 0 {
		o.Window = 2 * time.Minute
	}
	if o.ChunkSize <= 0 || o.ChunkSize > release.MaxChunk {
		o.ChunkSize = 256 << 10
	}
	if o.Executable == "" {
		o.Executable, _ = os.Executable()
	}
}

// maxTries bounds the downloads of a build whose bytes do not match.
const maxTries = 3

// errSuperseded: a newer assignment came during a download.
var errSuperseded = errors.New("a newer release was assigned")

// updater carries out the cloud's assignments; one goroutine (run) owns
// the download, the swap and the state file, another (watchTrial) judges a
// trial.
type updater struct {
	e    *Edge
	o    UpdateOptions
	file string
	dir  string

	assigned chan release.Assignment // newest kept
	chunks   chan []byte
	restart  chan struct{} // closed when the process is to restart
	once     sync.Once

	mu sync.Mutex
	st release.State
}

func newUpdater(e *Edge) *updater {
	o := e.opts.Updates
	o.defaults()
	u := &updater{e: e, o: o, file: release.StateFile(e.opts.DataDir), dir: filepath.Join(e.opts.DataDir, "update"),
		assigned: make(chan release.Assignment, 1), chunks: make(chan []byte, 8), restart: make(chan struct{})}
	return u
}

// State is what the edge reports of its update.
func (u *updater) state() release.State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

// set changes the state and saves it, under the lock: the run and trial
// goroutines both write the file.
func (u *updater) set(f func(s *release.State)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(&u.st)
	if err := release.SaveState(u.file, u.st); err != nil {
		u.e.log.Error("update state not saved", "err", err)
	}
}

// onTrial says whether this binary is the one on trial now.
func (u *updater) onTrial() bool {
	st := u.state()
	return st.Step == release.StepTrial && st.Version == u.own()
}

// assign takes an assignment from the broker's goroutine: never blocks.
func (u *updater) assign(payload []byte) {
	var a release.Assignment
	if err := json.Unmarshal(payload, &a); err != nil || release.ValidVersion(a.Version) != nil {
		u.e.log.Warn("malformed update assignment ignored", "err", err)
		return
	}
	for {
		select {
		case u.assigned <- a:
			return
		default:
		}
		select {
		case <-u.assigned:
		default:
		}
	}
}

// chunk takes a piece of a build from the broker's goroutine.
func (u *updater) chunk(payload []byte) {
	select {
	case u.chunks <- append([]byte(nil), payload...):
	default: // asked for again after a timeout
	}
}

// resume reads the state a former process left and says whether this
// process is a new binary on trial.
func (u *updater) resume() (trial bool) {
	release.Tidy(u.o.Executable)
	st, err := release.LoadState(u.file)
	if err != nil {
		u.e.log.Error("update state not read; starting afresh", "err", err)
		st = release.State{}
	}
	u.mu.Lock()
	u.st = st
	u.mu.Unlock()
	switch st.Step {
	case release.StepRestarting:
		if u.own() != st.Version {
			// The old binary again: the process stopped before it
			// restarted into the new one.
			u.set(func(s *release.State) {
				s.Step, s.Error = release.StepFailed, "the update stopped before the restart; it is tried again"
			})
			return false
		}
		u.set(func(s *release.State) {
			s.Step, s.TrialSince, s.Window = release.StepTrial, time.Now().UTC(), u.o.Window
		})
		return true
	case release.StepTrial:
		return u.own() == st.Version
	}
	return false
}

// Restart is closed when an update wants the process restarted: into a
// new binary, or into the previous one after a failed trial.
func (e *Edge) Restart() <-chan struct{} { return e.upd.restart }

// UpdateState is the edge's software update as it stands.
func (e *Edge) UpdateState() release.State { return e.upd.state() }

// own is the release version of the running binary.
func (u *updater) own() string { return release.VersionOf(u.e.opts.Version) }

func (u *updater) requestRestart() { u.once.Do(func() { close(u.restart) }) }

// health says what a new binary still lacks to be healthy: a connection,
// a birth, data sent; "" when it has them all.
func (u *updater) health() string {
	switch {
	case u.e.node == nil || !u.e.node.connected.Load():
		return "not connected to the cloud"
	case !u.e.Online():
		return "connected, not born (no primary host online?)"
	case u.e.Stats().Sent == 0:
		return "born, no data sent"
	}
	return ""
}

// watchTrial marks the new binary healthy once it is, or, unsupervised,
// puts the previous one back when its window passes first.
func (u *updater) watchTrial(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !u.onTrial() {
			return
		}
		missing := u.health()
		st := u.state()
		if missing == "" {
			u.set(func(s *release.State) { s.Step, s.Health, s.Error = release.StepHealthy, "", "" })
			u.e.log.Info("update healthy", "version", st.Version, "from", st.From, "after", time.Since(st.TrialSince).Round(time.Millisecond))
			return
		}
		if missing != last {
			last = missing
			u.set(func(s *release.State) { s.Health = missing })
		}
		if !u.o.Supervised && time.Since(st.TrialSince) > st.Window {
			cause := fmt.Sprintf("not healthy within %s: %s", st.Window, missing)
			if err := release.Restore(u.o.Executable); err != nil {
				u.e.log.Error("update failed its trial and the previous binary cannot be put back", "cause", cause, "err", err)
				return
			}
			u.set(func(s *release.State) { s.Step, s.Error = release.StepRolledBack, cause })
			u.e.log.Error("update rolled back", "version", st.Version, "cause", cause)
			u.requestRestart()
			return
		}
	}
}

// run carries out assignments until ctx ends.
func (u *updater) run(ctx context.Context) {
	var retry <-chan time.Time
	var pending *release.Assignment
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-u.assigned:
			pending = &a
		case <-retry:
		}
		retry = nil
		if pending == nil {
			continue
		}
		if u.onTrial() {
			// A release assigned while this one proves itself waits: the
			// binary to go back to must stay the one known good.
			retry = time.After(time.Second)
			continue
		}
		switch err := u.carryOut(ctx, *pending); {
		case err == nil:
			pending = nil
		case errors.Is(err, errSuperseded), ctx.Err() != nil:
		default:
			pause := 30 * time.Second
			if errors.Is(err, release.ErrTampered) {
				pause = time.Second // fetched again at once, a bounded number of times
			}
			u.e.log.Warn("update failed; trying again", "version", pending.Version, "in", pause, "err", err)
			u.set(func(s *release.State) { s.Step, s.Error = release.StepFailed, err.Error() })
			retry = time.After(pause)
		}
	}
}

// carryOut fetches, checks and installs an assignment's build; nil when
// there is nothing (more) to do for it.
func (u *updater) carryOut(ctx context.Context, a release.Assignment) error {
	if a.Version == u.own() {
		return nil // running it
	}
	st := u.state()
	build, ok := a.Build(runtime.GOOS, runtime.GOARCH)
	if !ok {
		u.refuse(a, release.Manifest{}, fmt.Sprintf("release %s has no build for %s/%s", a.Version, runtime.GOOS, runtime.GOARCH))
		return nil
	}
	if st.Version == a.Version && st.SHA256 == build.SHA256 && (st.Step == release.StepRefused || st.Step == release.StepRolledBack) {
		return nil // failed here before: not tried again
	}
	if u.o.PublicKey == nil {
		// Not refused for good: a key set in the config later takes it.
		return errors.New("this edge pins no release key (updates.public_key in its config)")
	}
	if err := release.Verify(u.o.PublicKey, build); err != nil {
		u.refuse(a, build, err.Error())
		return nil
	}
	tries := 0
	if st.Version == a.Version && st.SHA256 == build.SHA256 {
		tries = st.Tries
	}
	u.set(func(s *release.State) {
		*s = release.State{Version: a.Version, SHA256: build.SHA256, From: u.own(), Rollout: a.Rollout, Step: release.StepDownloading, Tries: tries}
	})
	u.e.log.Info("update: downloading", "version", a.Version, "bytes", build.Size)
	file, err := u.download(ctx, build)
	if err != nil {
		return err
	}
	u.set(func(s *release.State) { s.Step, s.Percent = release.StepVerifying, 100 })
	if err := release.Check(u.o.PublicKey, build, file); err != nil {
		os.Remove(file)
		// Bytes that do not match may be this disk's doing (a power cut
		// during the download): fetched again, up to three times.
		if errors.Is(err, release.ErrTampered) && tries+1 < maxTries {
			u.set(func(s *release.State) { s.Tries = tries + 1 })
			return err
		}
		u.refuse(a, build, err.Error())
		return nil
	}
	// Said before the swap: a process stopped during it starts again with
	// this state, and the SHA-256 of the binary in place (or, without a
	// supervisor, the version it runs) tells whether the swap was done.
	u.set(func(s *release.State) { s.Step = release.StepRestarting })
	if err := release.Install(u.o.Executable, file); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	os.Remove(file)
	u.e.log.Info("update installed; restarting into it", "version", a.Version, "binary", u.o.Executable)
	u.requestRestart()
	return nil
}

func (u *updater) refuse(a release.Assignment, b release.Manifest, why string) {
	u.set(func(s *release.State) {
		tries := 0
		if s.Version == a.Version && s.SHA256 == b.SHA256 {
			tries = s.Tries
		}
		*s = release.State{Version: a.Version, SHA256: b.SHA256, From: u.own(), Rollout: a.Rollout, Step: release.StepRefused, Error: why, Tries: tries}
	})
	u.e.log.Error("update refused", "version", a.Version, "why", why)
}

// download fetches a build into the data dir, from where an earlier try
// stopped, and returns its file.
func (u *updater) download(ctx context.Context, b release.Manifest) (string, error) {
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return "", err
	}
	file := filepath.Join(u.dir, b.SHA256+".part")
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := min(st.Size(), b.Size)
	began, from := time.Now(), off
	for off < b.Size {
		if len(u.assigned) > 0 {
			return "", errSuperseded
		}
		req := release.ChunkRequest{SHA256: b.SHA256, Offset: off, Length: int(min(int64(u.o.ChunkSize), b.Size-off))}
		data, err := u.fetch(ctx, req)
		if err != nil {
			return "", err
		}
		if _, err := f.WriteAt(data, off); err != nil {
			return "", err
		}
		off += int64(len(data))
		pct := 100 * float64(off) / float64(b.Size)
		u.mu.Lock()
		u.st.Percent = pct
		u.mu.Unlock()
		if cap := u.o.MaxBytesPerSecond; cap > 0 {
			due := began.Add(time.Duration(float64(off-from) / float64(cap) * float64(time.Second)))
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Until(due)):
			}
		}
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return file, nil
}

// fetch asks for one piece until it comes: again after a silence, and
// after a reconnect.
func (u *updater) fetch(ctx context.Context, req release.ChunkRequest) ([]byte, error) {
	b, _ := json.Marshal(req)
	for {
		if err := u.e.node.request(u.e.opts.Group, u.e.opts.EdgeID, b); err != nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(2 * time.Second):
			}
			continue
		}
		timeout := time.After(15 * time.Second)
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-timeout:
				break wait
			case raw := <-u.chunks:
				h, data, err := release.DecodeChunk(raw)
				if err != nil || h.SHA256 != req.SHA256 || h.Offset != req.Offset {
					continue // an answer to an earlier request
				}
				if h.Error != "" {
					return nil, fmt.Errorf("the cloud: %s", h.Error)
				}
				if len(data) == 0 || h.Size != req.Offset+int64(len(data)) && len(data) != req.Length {
					return nil, fmt.Errorf("the cloud sent %d bytes at %d of a %d-byte build", len(data), h.Offset, h.Size)
				}
				return data, nil
			}
		}
	}
}
