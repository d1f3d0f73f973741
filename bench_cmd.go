package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/bench"
	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/web"
)

const benchSynopsis = `Measure the whole pipeline: simulated Sparkplug B edge nodes publish over
real MQTT connections to a cloud, started in this process on a temporary data dir
(the default) or running elsewhere (--target). After a warm-up the bench reads the
cloud's /metrics and API each second and reports values/s at each stage (broker,
backbone, host, historian, live API), sample-to-historian and sample-to-live-API
latency, CPU, peak memory, consumer lag and values dropped, beside this machine's
bare DuckDB appender and JetStream publish rates. When the offered rate leaves a
backlog, the rate at which the cloud works it off after the edges stop is its
ingest capacity through the whole path (the historian's catch-up).

A --target cloud needs an admin account (--user, and the password in
CALX_BENCH_PASSWORD): the bench provisions an MQTT account per simulated edge
through POST /api/v1/edges under a new group, and counts what was stored with
POST /api/v1/sql.`

func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", benchSynopsis, stdout, stderr)
	edges := fs.Int("edges", 10, "simulated edge nodes")
	tags := fs.Int("tags-per-edge", 100, "tags of each edge's device")
	rate := fs.Float64("rate", 1, "messages per edge and second")
	change := fs.Float64("change-ratio", 1, "share of the tags that change at each message (report by exception)")
	duration := fs.Duration("duration", 30*time.Second, "measured window")
	warmup := fs.Duration("warmup", 5*time.Second, "run before measuring")
	bareFor := fs.Duration("bare", 3*time.Second, "how long to measure each bare limit (0: skip)")
	scenario := fs.String("scenario", "", "a scenario file (fleets, warmup, duration) instead of the fleet flags")
	target := fs.String("target", "", "base URL of a running cloud's HTTP API (default: start one in this process)")
	inProcess := fs.Bool("in-process", false, "start the cloud in this process on a temporary data dir (the default without --target)")
	mqttURL := fs.String("mqtt", "", "the target's MQTT broker: mqtt://host:port, or mqtts:// (ssl://, tls://) for TLS; for a cluster, the nodes' brokers, comma-separated (the edges take them in turn)")
	user := fs.String("user", "admin", "the target's admin user; password in CALX_BENCH_PASSWORD")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	logLevel := fs.String("log-level", "warn", "log level of the in-process cloud")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *inProcess && *target != "" {
		return fmt.Errorf("%w: --in-process and --target exclude each other", errUsage)
	}
	var sc bench.Scenario
	if *scenario != "" {
		var err error
		if sc, err = bench.LoadScenario(*scenario); err != nil {
			return err
		}
	} else {
		sc = bench.Scenario{Fleets: []bench.Fleet{{Group: "bench", Edges: *edges, TagsPerEdge: *tags, Rate: *rate, ChangeRatio: *change}},
			Warmup: config.Duration(*warmup), Duration: config.Duration(*duration), Bare: config.Duration(*bareFor)}
		if *bareFor == 0 {
			sc.Bare = -1
		}
		if err := sc.Validate("flags"); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	ctx, cancel := signalContext()
	defer cancel()
	progress := stderr
	if *asJSON && !isTerminal(stderr) {
		progress = io.Discard
	}

	var t bench.Target
	if *target == "" {
		log, err := newLogger(stderr, *logLevel, "auto")
		if err != nil {
			return err
		}
		stopCloud, tt, err := benchCloud(ctx, sc, log)
		if err != nil {
			return err
		}
		defer stopCloud()
		t = tt
	} else {
		if *mqttURL == "" {
			return fmt.Errorf("%w: --target needs --mqtt, the target's broker", errUsage)
		}
		pw := os.Getenv("CALX_BENCH_PASSWORD")
		if pw == "" {
			return fmt.Errorf("%w: --target needs the password of --user in CALX_BENCH_PASSWORD", errUsage)
		}
		// A group of its own per run: provisioned accounts cannot be created twice.
		run := time.Now().UTC().Format("20060102T150405")
		for i := range sc.Fleets {
			sc.Fleets[i].Group += "-" + run
		}
		t = bench.Target{HTTP: *target, MQTT: *mqttURL, Username: *user, Password: pw}
		t.Credentials = bench.Provisioner(*target, *user, pw)
	}
	res, err := bench.Run(ctx, sc, t, progress)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res.JSON())
	}
	res.Print(stdout)
	if res.Dropped > 0 {
		return fmt.Errorf("%d values dropped", res.Dropped)
	}
	return nil
}

// benchCloud starts a cloud in this process on a temporary data dir, with
// an MQTT account for every edge of the scenario.
func benchCloud(ctx context.Context, sc bench.Scenario, log *slog.Logger) (func(), bench.Target, error) {
	dir, err := os.MkdirTemp("", "calx-bench-")
	if err != nil {
		return nil, bench.Target{}, err
	}
	const edgePw = "bench-edge-password"
	// The lowest bcrypt cost: thousands of edges log in at once, and the
	// accounts live only as long as the run.
	hash, err := bcrypt.GenerateFromPassword([]byte(edgePw), bcrypt.MinCost)
	if err != nil {
		return nil, bench.Target{}, err
	}
	var users []cloud.MQTTUser
	for _, f := range sc.Fleets {
		for i := range f.Edges {
			id := bench.EdgeID(i)
			users = append(users, cloud.MQTTUser{Username: f.Group + "." + id, PasswordHash: string(hash), Role: cloud.RoleEdge, Group: f.Group, EdgeID: id})
		}
	}
	adminPw := randomSecret(16)
	adminHash, err := bcrypt.GenerateFromPassword([]byte(adminPw), bcrypt.MinCost)
	if err != nil {
		return nil, bench.Target{}, err
	}
	// The bench stops its edges on purpose and drains afterwards: no
	// offline alarms for them while it does.
	health := cloud.HealthOptions{OfflineAfter: 24 * time.Hour}
	// Every simulated edge connects from this machine's address: the
	// broker's cap of connections from one address must hold them all.
	limits := guard.Limits{MaxPerAddress: max(guard.DefaultMaxPerAddress, 2*len(users)+64)}
	app, err := startCloudApp(ctx, cloud.Options{DataDir: filepath.Join(dir, "cloud"), MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", Users: users, Limits: limits},
		Health: health, Logger: log},
		[]web.User{{Username: "admin", PasswordHash: string(adminHash), Role: web.RoleAdmin}}, web.Options{Listen: "127.0.0.1:0"}, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, bench.Target{}, err
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		app.shutdown(sctx)
		os.RemoveAll(dir)
	}
	t := bench.Target{HTTP: "http://" + app.web.Addr(), MQTT: "tcp://" + app.cloud.Broker.Addr(), Username: "admin", Password: adminPw, InProcess: true,
		Credentials: func(_ context.Context, group, edge string) (bench.Credentials, error) {
			return bench.Credentials{Username: group + "." + edge, Password: edgePw}, nil
		}}
	return stop, t, nil
}
