//go:build linux

package fault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/internal/mosquitto"
	"github.com/calx-iiot/calx/internal/netcut"

	"github.com/calx-iiot/calx/edge/edgetest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds calx once for all fault tests.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "calx-fault-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "calx")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// checkFor polls until a condition holds.
var checkFor = edgetest.CheckFor

func freeAddr(t *testing.T) string { return netcut.FreeAddr(t) }

// proc is a calx process.
type proc struct {
	t    *testing.T
	bin  string // the binary; default the calx built for the tests
	args []string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   sync.Mutex
}

func (p *proc) start() {
	p.t.Helper()
	p.out = &bytes.Buffer{}
	bin := p.bin
	if bin == "" {
		bin = binary(p.t)
	}
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Env = append(os.Environ(), "CALX_ADMIN_PASSWORD=fault-admin-pw")
	if dir := os.Getenv("CALX_FAULT_PROFILE"); dir != "" { // a CPU profile of each process, written at its clean stop
		p.cmd.Env = append(p.cmd.Env, fmt.Sprintf("CALX_CPU_PROFILE=%s/%s-%d.pprof", dir, p.args[0], time.Now().UnixNano()))
	}
	// Should the test process die, its children die with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := &lockedWriter{mu: &p.mu, w: p.out}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// proxy forwards TCP connections to a target and can cut them all.
// site is a cloud and an edge as separate processes, linked by a proxy.
type site struct {
	t           *testing.T
	dir         string
	cloud, edge *proc
	proxy       *netcut.Proxy
	httpAddr    string
	edgeHTTP    string
	api         client
	counterPath string
	fastPath    string
	fastRate    int
	// mosq, when set, is the plant's broker between the edge and the
	// cloud (Mosquitto), the cloud its primary host as a client.
	mosq *mosquitto.Broker
}

func newSite(t *testing.T, fastRate, fastTags int) *site {
	return newSiteOn(t, fastRate, fastTags, false)
}

// newSiteOn makes a site; viaMosquitto puts Mosquitto between the edge and
// the cloud, the edge connecting to it and the cloud its primary host.
func newSiteOn(t *testing.T, fastRate, fastTags int, viaMosquitto bool) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{t: t, dir: dir, httpAddr: freeAddr(t), edgeHTTP: freeAddr(t), fastRate: fastRate,
		counterPath: "limeworks/fault/utilities/line1/clock/counter", fastPath: "limeworks/fault/utilities/line1/clock/fast"}
	s.api.addr = s.httpAddr
	mqttAddr := freeAddr(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("edge-pw"), bcrypt.MinCost)
	cloudYAML := fmt.Sprintf(`data_dir: %s
http: {listen: %s}
mqtt: {listen: %s}
edges:
  - {username: fault-edge, password_hash: '%s', group: limeworks, edge_id: fault-edge}
`, filepath.Join(dir, "cloud"), s.httpAddr, mqttAddr, hash)
	target := mqttAddr
	if viaMosquitto {
		s.mosq = mosquitto.Start(t)
		target = s.mosq.Addr
		cloudYAML += fmt.Sprintf("broker: {url: 'mqtt://%s'}\n", s.mosq.Addr)
	}
	s.proxy = netcut.New(t, target)
	edgeYAML := edgeConfig(filepath.Join(dir, "edge"), s.edgeHTTP, s.proxy.Addr(),
		fmt.Sprintf("{period: 100ms, fast_rate: %d, fast_tags: %d, interval: 20ms}", fastRate, fastTags))
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s.cloud = &proc{t: t, args: []string{"cloud", "--config", write("cloud.yaml", cloudYAML), "--log-level", "warn"}}
	s.edge = &proc{t: t, args: []string{"edge", "--config", write("edge.yaml", edgeYAML), "--log-level", "warn"}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cloud metrics:\n%s\nedge metrics:\n%s", calxMetrics(s.httpAddr), calxMetrics(s.edgeHTTP))
		}
		s.edge.stop()
		s.cloud.stop()
		if t.Failed() {
			t.Logf("cloud output:\n%s\nedge output:\n%s", s.cloud.output(), s.edge.output())
		}
	})
	return s
}

// edgeConfig is the config of the fault edge: its clock connector with
// settings, its buffer in dataDir, its API on httpAddr, the cloud's broker
// at broker, then the others (Sparkplug's next servers).
func edgeConfig(dataDir, httpAddr, broker, settings string, others ...string) string {
	more := ""
	if len(others) > 0 {
		more = "\n  brokers: [tcp://" + broker + ", tcp://" + strings.Join(others, ", tcp://") + "]"
	}
	return fmt.Sprintf(`data_dir: %s
http: %s
cloud:
  broker: tcp://%s%s
  username: fault-edge
  password: edge-pw
  group: limeworks
  edge_id: fault-edge
devices:
  - id: clock
    path: limeworks/fault/utilities/line1/clock
    connector: clock
    settings: %s
`, dataDir, httpAddr, broker, more, settings)
}

func (s *site) startCloud() {
	s.t.Helper()
	s.cloud.start()
	s.api.token = ""
	waitReady(s.t, s.httpAddr, 50*time.Millisecond)
}

// waitReady polls a cloud's /readyz every so often until it answers 200.
func waitReady(t *testing.T, httpAddr string, every time.Duration) {
	t.Helper()
	checkFor(t, 30*time.Second, every, func() error {
		res, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("readyz %d", res.StatusCode)
		}
		return nil
	})
}

// client calls the cloud's API as admin, logging in when it has no token.
type client struct {
	addr, token string
}

func (c *client) do(method, path string, body []byte, out any) error {
	if c.token == "" {
		b, _ := json.Marshal(map[string]string{"username": "admin", "password": "fault-admin-pw"})
		res, err := http.Post("http://"+c.addr+"/api/v1/login", "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		var tok struct{ Token string }
		json.NewDecoder(res.Body).Decode(&tok)
		res.Body.Close()
		c.token = tok.Token
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// values returns the stored integer values of a tag since from.
func (s *site) values(path string, from time.Time) ([]int64, error) {
	var all []int64
	for {
		q := url.Values{"path": {path}, "from": {from.UTC().Format(time.RFC3339Nano)}, "to": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)}, "limit": {"100000"}}
		var h struct {
			Points []struct {
				TS    time.Time `json:"ts"`
				Value *int64    `json:"value"`
			} `json:"points"`
			Truncated bool `json:"truncated"`
		}
		if err := s.api.do("GET", "/api/v1/history?"+q.Encode(), nil, &h); err != nil {
			return nil, err
		}
		for _, p := range h.Points {
			if p.Value != nil {
				all = append(all, *p.Value)
			}
		}
		if !h.Truncated || len(h.Points) == 0 {
			return all, nil
		}
		from = h.Points[len(h.Points)-1].TS.Add(time.Nanosecond)
	}
}

// metric reads one unlabelled Prometheus figure from a /metrics page.
func metric(addr, name string) (float64, error) {
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			return f, err
		}
	}
	return 0, fmt.Errorf("%s not on %s/metrics", name, addr)
}

// calxMetrics is the product's own figures on a /metrics page, for a
// failure message: Go runtime figures left out.
func calxMetrics(addr string) string {
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "calx_") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// drained reports whether the edge's buffer holds no more than live data
// awaiting its receipt and the historian is close behind the cloud's intake:
// then it is worth reading the history back.
func (s *site) drained() bool {
	buffered, err := metric(s.edgeHTTP, "calx_edge_buffer_messages")
	if err != nil || buffered > 500 {
		return false
	}
	pending, err := metric(s.httpAddr, "calx_historian_consumer_pending")
	return err == nil && pending < 200
}

// latest is the newest value and its time of a tag in the namespace.
func (s *site) latest(path string) (int64, time.Time, error) {
	var ns struct {
		Tags []struct {
			Path  string    `json:"path"`
			Value *int64    `json:"value"`
			TS    time.Time `json:"ts"`
		} `json:"tags"`
	}
	if err := s.api.do("GET", "/api/v1/namespace?prefix="+url.QueryEscape(path), nil, &ns); err != nil {
		return 0, time.Time{}, err
	}
	for _, tg := range ns.Tags {
		if tg.Path == path && tg.Value != nil {
			return *tg.Value, tg.TS, nil
		}
	}
	return 0, time.Time{}, fmt.Errorf("%s has no value yet", path)
}

// report is the outcome of a fault scenario for one tag.
type report struct {
	scenario            string
	expected, stored    int
	lost, duplicated    int
	missing             []int64       // the first steps lost, for the failure message
	reconnect           time.Duration // from the fault's end to live data again
	drain, maxLiveDelay time.Duration
}

// verify checks that the tag holds every step from first to last exactly
// once, except those in the excused ranges (the edge was dead then, so they
// were never read).
func verify(vals []int64, first, last int64, excused [][2]int64) report {
	r := report{}
	seen := map[int64]int{}
	for _, v := range vals {
		if v >= first && v <= last {
			seen[v]++
		}
	}
	for v := first; v <= last; v++ {
		ex := false
		for _, e := range excused {
			if v >= e[0] && v <= e[1] {
				ex = true
			}
		}
		n := seen[v]
		if ex && n == 0 {
			continue
		}
		r.expected++
		switch {
		case n == 0:
			r.lost++
			if len(r.missing) < 10 {
				r.missing = append(r.missing, v)
			}
		case n > 1:
			r.duplicated += n - 1
			r.stored++
		default:
			r.stored++
		}
	}
	return r
}

func printTable(t *testing.T, rs []report) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-44s %10s %10s %6s %10s %10s %10s %14s\n", "scenario", "sent", "stored", "lost", "duplicated", "reconnect", "drain", "max live delay")
	for _, r := range rs {
		fmt.Fprintf(&b, "%-44s %10d %10d %6d %10d %10s %10s %14s\n", r.scenario, r.expected, r.stored, r.lost, r.duplicated,
			r.reconnect.Round(100*time.Millisecond), r.drain.Round(100*time.Millisecond), r.maxLiveDelay.Round(10*time.Millisecond))
	}
	t.Log(b.String())
}
