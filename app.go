package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/config"
	_ "github.com/calx-iiot/calx/connector/all" // registers every connector
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/release"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web"
)

// cloudApp is a running cloud with its web server.
type cloudApp struct {
	cloud *cloud.Cloud
	web   *web.Server
	auth  *web.Auth
}

// startCloudApp starts a cloud and its web server, whose options give the
// listener (address, TLS, limits, metrics token).
func startCloudApp(ctx context.Context, co cloud.Options, users []web.User, wo web.Options, log *slog.Logger) (*cloudApp, error) {
	co.Version = version
	c, err := cloud.New(co)
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	auth, err := web.NewAuth(users)
	if err != nil {
		c.Shutdown(context.Background())
		return nil, err
	}
	wo.Cloud, wo.Auth, wo.Version, wo.Logger = c, auth, version, log
	ws, err := web.New(wo)
	if err != nil {
		c.Shutdown(context.Background())
		return nil, err
	}
	if err := ws.Start(); err != nil {
		c.Shutdown(context.Background())
		return nil, err
	}
	return &cloudApp{cloud: c, web: ws, auth: auth}, nil
}

func (a *cloudApp) shutdown(ctx context.Context) error {
	errWeb := a.web.Shutdown(ctx)
	return errors.Join(errWeb, a.cloud.Shutdown(ctx))
}

// adminUser returns the admin user: its password from CALX_ADMIN_PASSWORD,
// or a new random one that the caller prints once.
func adminUser() (web.User, string, bool, error) {
	pw := os.Getenv("CALX_ADMIN_PASSWORD")
	generated := pw == ""
	if generated {
		pw = randomSecret(12)
	}
	h, err := cloud.HashPassword(pw)
	if err != nil {
		return web.User{}, "", false, err
	}
	return web.User{Username: "admin", PasswordHash: h, Role: web.RoleAdmin}, pw, generated, nil
}

func randomSecret(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// demoSite is one simulated site of the demo's lime producer.
type demoSite struct {
	site  string
	kilns []sim.Settings
}

const demoEnterprise = "limeworks"

var demoSites = []demoSite{
	{site: "ghent", kilns: []sim.Settings{
		{StartHot: true, MeanTimeBetweenTrips: 15 * time.Minute},
		{MeanTimeBetweenTrips: 10 * time.Minute},
	}},
	{site: "lyon", kilns: []sim.Settings{
		{StartHot: true, MeanTimeBetweenTrips: 8 * time.Minute, CycleTime: 45 * time.Second},
	}},
}

type demoOptions struct {
	HTTP, MQTT, DataDir string
	// SimInterval overrides the kilns' read interval (tests go faster).
	SimInterval time.Duration
	// Sinks get the demo's values too.
	Sinks  []cloud.Sink
	Logger *slog.Logger
}

// demo is a cloud and simulated edges in one process.
type demo struct {
	app      *cloudApp
	edges    []*edge.Edge
	password string
	genPw    bool
}

func startDemo(ctx context.Context, o demoOptions) (*demo, error) {
	log := o.Logger
	admin, pw, gen, err := adminUser()
	if err != nil {
		return nil, err
	}
	type edgeCred struct{ id, password string }
	var creds []edgeCred
	var users []cloud.MQTTUser
	for _, s := range demoSites {
		id := s.site + "-edge"
		secret := randomSecret(18)
		h, err := cloud.HashPassword(secret)
		if err != nil {
			return nil, err
		}
		users = append(users, cloud.MQTTUser{Username: id, PasswordHash: h, Role: cloud.RoleEdge, Group: demoEnterprise, EdgeID: id})
		creds = append(creds, edgeCred{id, secret})
	}
	app, err := startCloudApp(ctx, cloud.Options{
		DataDir: filepath.Join(o.DataDir, "cloud"),
		MQTT:    cloud.BrokerOptions{Listen: o.MQTT, Users: users},
		Sinks:   o.Sinks,
		Logger:  log,
	}, []web.User{admin}, web.Options{Listen: o.HTTP}, log)
	if err != nil {
		return nil, err
	}
	d := &demo{app: app, password: pw, genPw: gen}
	if err := saveDemoFleet(ctx, app.cloud.Fleet); err != nil {
		d.shutdown(context.Background())
		return nil, err
	}
	broker := "tcp://" + app.cloud.Broker.Addr()
	for i, s := range demoSites {
		var devices []edge.Device
		for k, ks := range s.kilns {
			ks.Interval = o.SimInterval
			id := fmt.Sprintf("kiln%d", k+1)
			kiln, err := sim.New(s.site+"/"+id, ks)
			if err != nil {
				d.shutdown(context.Background())
				return nil, err
			}
			devices = append(devices, edge.Device{ID: id, Path: uns.Join(demoEnterprise, s.site, "kilns", "line"+fmt.Sprint(k+1), id), Connector: kiln})
		}
		e, err := edge.New(edge.Options{
			Broker: broker, Username: creds[i].id, Password: creds[i].password,
			Group: demoEnterprise, EdgeID: creds[i].id, PrimaryHost: "calx",
			DataDir: filepath.Join(o.DataDir, "edges", creds[i].id),
			Devices: devices, Version: versionCommit(), Logger: log,
		})
		if err != nil {
			d.shutdown(context.Background())
			return nil, err
		}
		if err := e.Start(ctx); err != nil {
			d.shutdown(context.Background())
			return nil, err
		}
		d.edges = append(d.edges, e)
	}
	return d, nil
}

// saveDemoFleet stores, on a first start, the demo's plants as the fleet
// config: one lime kiln template with calculated tags (energy, emission
// averages), its burning cycles and alarms, and the edges with their kilns.
// The demo's edges run their own devices; the config shows the model, and
// the cloud computes the transforms.
func saveDemoFleet(ctx context.Context, f *cloud.Fleet) error {
	if head, err := f.Head(ctx); err != nil || head > 0 {
		return err
	}
	_, err := f.Save(ctx, demoFleetYAML, "demo", "the demo's plants")
	return err
}

// demoFleetYAML is the demo's fleet config.
//
//go:embed examples/demo-fleet.yaml
var demoFleetYAML []byte

// shutdown stops the edges first, then the cloud.
func (d *demo) shutdown(ctx context.Context) error {
	var errs []error
	for _, e := range d.edges {
		errs = append(errs, e.Shutdown(ctx))
	}
	errs = append(errs, d.app.shutdown(ctx))
	return errors.Join(errs...)
}

// uiURL is the address to open in a browser.
func uiURL(addr string, tls bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
		addr = net.JoinHostPort("localhost", port)
	}
	if tls {
		return "https://" + addr + "/"
	}
	return "http://" + addr + "/"
}

func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", `Run Calx in one process for a trial: the cloud (MQTT broker, JetStream backbone,
Sparkplug primary host, DuckDB historian, web UI) and two edges that read
simulated lime kilns at two sites and publish Sparkplug B over MQTT.
Open the printed URL and sign in as admin.`, stdout, stderr)
	httpAddr := fs.String("http", "127.0.0.1:8080", "address of the web UI and API")
	mqttAddr := fs.String("mqtt", "127.0.0.1:1883", "address of the MQTT broker")
	dataDir := fs.String("data-dir", "./calx-data", "where the backbone, history and edge state are kept")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	d, err := startDemo(ctx, demoOptions{HTTP: *httpAddr, MQTT: *mqttAddr, DataDir: *dataDir, Logger: log})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nCalx demo is running.\n  UI:       %s\n  user:     admin\n", uiURL(d.app.web.Addr(), false))
	if d.genPw {
		fmt.Fprintf(stdout, "  password: %s   (generated; set CALX_ADMIN_PASSWORD to choose one)\n", d.password)
	} else {
		fmt.Fprintf(stdout, "  password: from CALX_ADMIN_PASSWORD\n")
	}
	fmt.Fprintf(stdout, "  MQTT:     %s (Sparkplug B; per-edge credentials)\n  data:     %s\nPress Ctrl+C to stop.\n\n", d.app.cloud.Broker.Addr(), *dataDir)
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping…")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return d.shutdown(sctx)
}

func cmdCloud(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cloud", `Run the Calx cloud on a VM: the MQTT broker (per-edge credentials and topic
ACLs, optional TLS), the JetStream backbone, the Sparkplug primary host, the
DuckDB historian and the web UI and API. See examples/cloud.yaml.`, stdout, stderr)
	cfgFile := fs.String("config", "cloud.yaml", "the cloud's YAML config file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise")
	httpAddr := fs.String("http", "", "address of the web UI and API (overrides http.listen)")
	mqttAddr := fs.String("mqtt", "", "address of the MQTT broker (overrides mqtt.listen)")
	dataDir := fs.String("data-dir", "", "data directory (overrides data_dir)")
	selfSigned := fs.Bool("tls-self-signed", false, "for a trial: TLS on every listener without a certificate of its own, from a CA made in the data dir on the first start")
	tlsHosts := fs.String("tls-hosts", "", "with --tls-self-signed: comma-separated names and addresses of this machine for the certificate (localhost and the host name always)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	cfg, err := cloud.LoadConfig(*cfgFile)
	if err != nil {
		return err
	}
	if *httpAddr != "" {
		cfg.HTTP.Listen = *httpAddr
	}
	if *mqttAddr != "" {
		cfg.MQTT.Listen = *mqttAddr
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *selfSigned {
		if err := selfSignedTLS(cfg, *tlsHosts, stdout); err != nil {
			return err
		}
	}
	warnExamples(log, stderr, exampleCloudAccounts(cfg))
	sso, err := oidcOptions(*cfgFile, cfg.HTTP.OIDC)
	if err != nil {
		return err
	}
	users := configUsers(cfg)
	var pw string
	var gen bool
	var extra []web.User // users not of the file, kept across reloads
	if len(users) == 0 || os.Getenv("CALX_ADMIN_PASSWORD") != "" {
		admin, p, g, err := adminUser()
		if err != nil {
			return err
		}
		extra, pw, gen = []web.User{admin}, p, g
		users = append(users, admin)
	}
	mqttTLS, _ := cfg.MQTT.TLS.Load()
	httpTLS, _ := cfg.HTTP.TLS.Load()
	natsTLS, _ := cfg.NATS.TLS.Load()
	cluster, _ := cfg.Cluster.Store() // checked by LoadConfig
	uplink, err := cfg.Broker.Uplink()
	if err != nil {
		return err
	}
	sinks, closeSinks, err := openSinks(cfg.Sinks)
	if err != nil {
		return err
	}
	defer closeSinks()
	ctx, stop := signalContext()
	defer stop()
	app, err := startCloudApp(ctx, cloud.Options{
		DataDir: cfg.DataDir, HostID: cfg.HostID, NATSListen: cfg.NATS.Listen, NATSUsers: cfg.NATS.Users, NATSTLS: natsTLS, Cluster: cluster, Uplink: uplink, SyncInterval: cfg.SyncInterval.Std(),
		MQTT:            cloud.BrokerOptions{Listen: cfg.MQTT.Listen, TLS: mqttTLS, Users: cfg.MQTTUsers(), Limits: cfg.MQTT.Limits},
		Retention:       cfg.RetentionRules(),
		HistorianMemory: int64(cfg.Historian.MemoryLimit), HistorianThreads: cfg.Historian.Threads,
		Health:      cfg.HealthOptions(),
		UNSInterval: cfg.MQTT.UNSEvery(),
		ReleaseKey:  cfg.Updates.PublicKey.Key,
		Sinks:       sinks,
		Logger:      log,
	}, users, web.Options{Listen: cfg.HTTP.Listen, TLS: httpTLS, MetricsTokenSHA256: cfg.HTTP.MetricsTokenSHA256,
		SessionIdle: cfg.HTTP.SessionIdle.Std(), SessionMax: cfg.HTTP.SessionMax.Std(), BehindTLSProxy: cfg.HTTP.BehindTLSProxy, OIDC: sso,
		MCPRate: cfg.HTTP.MCP.Rate, MCPBurst: cfg.HTTP.MCP.Burst, MCPWrites: cfg.HTTP.MCP.Writes}, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Calx cloud is running.\n  UI:   %s\n  MQTT: %s\n", uiURL(app.web.Addr(), httpTLS != nil), app.cloud.Broker.Addr())
	if gen {
		fmt.Fprintf(stdout, "  admin password: %s   (generated; set CALX_ADMIN_PASSWORD to choose one)\n", pw)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for running := true; running; {
		select {
		case <-hup:
			if err := app.reload(ctx, *cfgFile, extra, log); err != nil {
				log.Error("config not reloaded: the accounts stay as they were", "err", err)
			}
		case <-ctx.Done():
			running = false
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return app.shutdown(sctx)
}

// configUsers are the UI and API users of a cloud config.
func configUsers(cfg *cloud.Config) []web.User {
	var users []web.User
	for _, u := range cfg.Users {
		users = append(users, web.User{Username: u.Username, PasswordHash: u.PasswordHash, Role: u.Role, Scope: u.Scope})
	}
	return users
}

// reload reads the config file again (on SIGHUP) and puts its accounts in
// place: UI and API users, edges, readers and MQTT users. The file is
// checked whole first; other settings take a restart.
func (a *cloudApp) reload(ctx context.Context, file string, extra []web.User, log *slog.Logger) error {
	cfg, err := cloud.LoadConfig(file)
	if err != nil {
		return err
	}
	users := append(configUsers(cfg), extra...)
	if _, err := web.NewAuth(users); err != nil {
		return fmt.Errorf("%s: users: %w", file, err)
	}
	mqtt, err := a.cloud.ReloadMQTTUsers(ctx, cfg.MQTTUsers())
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	ui, err := a.auth.ReloadConfigUsers(users)
	if err != nil {
		return fmt.Errorf("%s: users: %w (the MQTT accounts were reloaded)", file, err)
	}
	log.Info("accounts reloaded", "file", file, "mqtt_accounts_changed", mqtt, "users_changed", ui)
	return nil
}

func cmdEdge(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("edge", `Run a Calx edge on a site PC: read the configured machines, apply
report-by-exception, and publish Sparkplug B to the cloud broker with this
edge's own credentials. See examples/edge.yaml.`, stdout, stderr)
	cfgFile := fs.String("config", "edge.yaml", "the edge's YAML config file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise")
	httpAddr := fs.String("http", "", "address of the edge's health and metrics endpoints (overrides http)")
	dataDir := fs.String("data-dir", "", "data directory with the store-and-forward buffer (overrides data_dir)")
	mqttAddr := fs.String("mqtt", "", "address of the edge's own broker with UNS JSON for consumers on site (overrides mqtt)")
	cloudURL := fs.String("cloud", "", "the cloud broker, tcp://host:port or ssl://host:port (overrides cloud.broker)")
	supervise := fs.Bool("supervise", false, "run the edge as a child process: start it again when it exits, and put the previous binary back when an update fails its health window (where no service manager does)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	cfg, err := edge.LoadConfig(*cfgFile)
	if err != nil {
		return err
	}
	if *httpAddr != "" {
		cfg.HTTP.Listen = *httpAddr
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *cloudURL != "" {
		cfg.Cloud.Broker, cfg.Cloud.Brokers = *cloudURL, nil
	}
	if *mqttAddr != "" {
		cfg.MQTT.Listen = *mqttAddr
	}
	opts, err := cfg.Options(log, versionCommit())
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("the edge's own binary: %w", err)
	}
	opts.Updates.Executable = exe
	if *supervise {
		sv := &supervisor{exe: exe, stateFile: release.StateFile(opts.DataDir), args: append([]string{"edge"}, withoutSupervise(args)...),
			window: cmp.Or(opts.Updates.Window, 2*time.Minute), log: log.With("component", "supervisor"), stdout: stdout, stderr: stderr}
		ctx, stop := signalContext()
		defer stop()
		return sv.run(ctx)
	}
	opts.Updates.Supervised = os.Getenv(envSupervised) != ""
	warnExamples(log, stderr, exampleEdgeAccounts(cfg, opts.Password))
	// A configuration from the cloud applied before runs again, cloud or not.
	switch rc, err := edge.LoadApplied(opts.DataDir); {
	case err != nil:
		log.Error("the cloud's last config cannot be read; running the local file's devices", "err", err)
	case rc != nil:
		devs, err := edge.BuildDevices(fmt.Sprintf("config version %d", rc.Version), "devices", rc.Devices, log.With("edge", opts.EdgeID))
		if err != nil {
			log.Error("the cloud's last config does not build; running the local file's devices", "version", rc.Version, "err", err)
			break
		}
		opts.Devices, opts.ConfigVersion = devs, rc.Version
		log.Info("running the cloud's config applied before", "version", rc.Version, "devices", len(devs))
	}
	e, err := edge.New(opts)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	if err := e.Start(ctx); err != nil {
		return err
	}
	var hs *edge.HealthServer
	if cfg.HTTP.Listen != "" {
		if hs, err = edge.StartHealth(e, cfg.HTTP.Listen, cfg.HTTP.TokenSHA256); err != nil {
			e.Shutdown(context.Background())
			return err
		}
	}
	fmt.Fprintf(stdout, "Calx edge %s/%s is running: %d devices, cloud %s\n", opts.Group, opts.EdgeID, len(opts.Devices), opts.Broker)
	if hs != nil {
		fmt.Fprintf(stdout, "  health: http://%s/healthz  metrics: http://%s/metrics\n", hs.Addr(), hs.Addr())
	}
	restart := false
	select {
	case <-ctx.Done():
	case <-e.Restart():
		restart = true
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if hs != nil {
		hs.Shutdown(sctx)
	}
	if err := e.Shutdown(sctx); err != nil || !restart {
		return err
	}
	if opts.Updates.Supervised {
		return errRestart
	}
	// No supervisor: this process becomes the binary now in place.
	log.Info("restarting into the binary in place", "binary", exe)
	return reexec(exe)
}

// selfSignedTLS gives every listener of cfg without a certificate the
// trial's own (config.SelfSigned in <data_dir>/tls), and says where its CA
// is and how to check it.
// oidcOptions reads single sign-on's settings (of the config file) and
// files; nil is none.
func oidcOptions(file string, c *cloud.OIDCConfig) (*web.OIDC, error) {
	if c == nil {
		return nil, nil
	}
	o, err := readOIDC(c)
	if err != nil {
		return nil, fmt.Errorf("%s: http.oidc: %w", file, err)
	}
	return o, nil
}

func readOIDC(c *cloud.OIDCConfig) (*web.OIDC, error) {
	o := &web.OIDC{Issuer: c.Issuer, ClientID: c.ClientID, RedirectURL: c.RedirectURL, Scopes: c.Scopes,
		UsernameClaim: c.UsernameClaim, GroupsClaim: c.GroupsClaim, Label: c.Label}
	for _, g := range c.Groups {
		o.Groups = append(o.Groups, web.GroupRole{Group: g.Group, Role: g.Role, Scope: g.Scope})
	}
	if c.ClientSecretFile != "" {
		b, err := os.ReadFile(c.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("client_secret_file: %w", err)
		}
		if o.ClientSecret = strings.TrimSpace(string(b)); o.ClientSecret == "" {
			return nil, fmt.Errorf("client_secret_file %s: empty", c.ClientSecretFile)
		}
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", c.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		o.Client = &http.Client{Transport: tr, Timeout: 15 * time.Second}
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}

func selfSignedTLS(cfg *cloud.Config, hosts string, stdout io.Writer) error {
	names := strings.Split(hosts, ",")
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	srv, caFile, fp, err := config.SelfSigned(filepath.Join(cfg.DataDir, "tls"), names)
	if err != nil {
		return err
	}
	for _, t := range []*config.TLS{&cfg.HTTP.TLS, &cfg.MQTT.TLS, &cfg.NATS.TLS} {
		if t.CertFile == "" {
			t.CertFile, t.KeyFile = srv.CertFile, srv.KeyFile
		}
	}
	fmt.Fprintf(stdout, "TLS on every listener, from the trial CA %s\n  SHA-256 fingerprint %s\n  give it to edges as cloud.ca_file and to browsers as a trusted CA\n", caFile, fp)
	return nil
}
