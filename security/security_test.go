package security

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/config"
	_ "github.com/calx-iiot/calx/connector/all" // registers every connector
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/internal/mqttraw"
	"github.com/calx-iiot/calx/internal/testcert"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/oidctest"
)

// logs collects what the cloud logs, for rows that check a log line.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// env is a cloud with TLS on every listener: MQTT, HTTPS and the NATS
// port, with limits small enough for a test to reach.
type env struct {
	cert    testcert.Cert
	client  *tls.Config // trusts the cloud's certificate
	cloud   *cloud.Cloud
	web     *web.Server
	logs    *logs
	base    string // https://...
	http    *http.Client
	mqtt    string // host:port
	tokens  map[string]string
	metrics string      // the /metrics bearer token
	srvTLS  *tls.Config // the listeners'
	idp     *oidctest.Provider
}

var (
	pwHash  = map[string]string{}
	hashMu  sync.Mutex
	secrets = "pw-SECRET-4711"
)

// hash is a bcrypt hash of pw at the cost real accounts have.
func hash(t *testing.T, pw string) string {
	t.Helper()
	hashMu.Lock()
	defer hashMu.Unlock()
	if h, ok := pwHash[pw]; ok {
		return h
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	pwHash[pw] = string(h)
	return string(h)
}

func startEnv(t *testing.T) *env {
	t.Helper()
	e := &env{cert: testcert.New(t), logs: &logs{}, tokens: map[string]string{}, metrics: "metrics-token-0123456789"}
	srvTLS, err := config.TLS{CertFile: e.cert.CertFile, KeyFile: e.cert.KeyFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	e.client, e.srvTLS = &tls.Config{RootCAs: e.cert.Pool}, srvTLS
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	users := []cloud.MQTTUser{
		{Username: "e1", PasswordHash: hash(t, "pw-e1"), Role: cloud.RoleEdge, Group: "g", EdgeID: "e1"},
		{Username: "e2", PasswordHash: hash(t, "pw-e2"), Role: cloud.RoleEdge, Group: "g", EdgeID: "e2"},
		{Username: "reader", PasswordHash: hash(t, "pw-reader"), Role: cloud.RoleReader},
		{Username: "ghent-hmi", PasswordHash: hash(t, "pw-ghent-hmi"), Role: cloud.RoleReader, Scope: []string{"ent/ghent"}},
		{Username: "mes", PasswordHash: hash(t, "pw-mes"), Role: cloud.RoleCustom, Publish: []string{"#"}, Subscribe: []string{"#"}},
	}
	// The broker also takes client certificates of the test CA (mTLS).
	mqttTLS, err := config.TLS{CertFile: e.cert.CertFile, KeyFile: e.cert.KeyFile, ClientCAFile: e.cert.CertFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	e.cloud, err = cloud.New(cloud.Options{DataDir: t.TempDir(), Logger: log,
		MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", TLS: mqttTLS, Users: users, Limits: guard.Limits{
			MaxPerAddress: 50, ConnectTimeout: config.Duration(500 * time.Millisecond), MaxPacketSize: 1 << 20, MaxSessionsPerAccount: 10}},
		NATSListen: "127.0.0.1:0", NATSTLS: srvTLS, NATSUsers: []store.NATSUser{{Username: "analytics", PasswordHash: hash(t, "pw-nats")}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cloud.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.cloud.Shutdown(context.Background()) })
	e.mqtt = e.cloud.Broker.Addr()
	auth, err := web.NewAuth([]web.User{
		{Username: "admin", PasswordHash: hash(t, "pw-admin"), Role: web.RoleAdmin},
		{Username: "eng", PasswordHash: hash(t, "pw-eng"), Role: web.RoleEngineer},
		{Username: "vera", PasswordHash: hash(t, "pw-vera"), Role: web.RoleViewer},
		{Username: "ghent-op", PasswordHash: hash(t, "pw-ghent-op"), Role: web.RoleOperator, Scope: web.Scope{"ent/ghent"}},
		{Username: "ghent-eng", PasswordHash: hash(t, "pw-ghent-eng"), Role: web.RoleEngineer, Scope: web.Scope{"ent/ghent"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(e.metrics))
	e.idp = oidctest.Start(t)
	e.idp.AddUser("ghent-sso", "pw-ghent-sso", "ghent-shift")
	e.web, err = web.New(web.Options{Listen: "127.0.0.1:0", TLS: srvTLS, Cloud: e.cloud, Auth: auth, Logger: log,
		MaxPerAddress: 20, MetricsTokenSHA256: hex.EncodeToString(sum[:]), OIDC: &web.OIDC{Issuer: e.idp.Issuer, ClientID: "calx",
			ClientSecret: "calx-client-secret", Groups: []web.GroupRole{{Group: "ghent-shift", Role: web.RoleOperator, Scope: web.Scope{"ent/ghent"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.web.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.web.Shutdown(context.Background()) })
	e.base = "https://" + e.web.Addr()
	e.idp.AddClient("calx", "calx-client-secret", e.base+"/auth/oidc/callback")
	e.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: e.client, MaxIdleConnsPerHost: 4}}
	for _, u := range []string{"admin", "eng", "vera", "ghent-op", "ghent-eng"} {
		code, out := e.api(t, "", "POST", "/api/v1/login", map[string]string{"username": u, "password": "pw-" + u})
		if code != 200 {
			t.Fatalf("login %s: %d %v", u, code, out)
		}
		e.tokens[u] = out["token"].(string)
	}
	// A fleet config with a secret in it.
	code, out := e.api(t, "admin", "PUT", "/api/v1/config", nil, `edges:
  - group: g
    edge_id: e1
    devices:
      - id: mes1
        path: ent/s/a/l/mes1
        connector: rest
        settings: {url: "https://mes.example.internal/api", password: `+secrets+`, username: u, interval: 30s, tags: [{name: qty, path: qty}]}
`)
	if code != 201 {
		t.Fatalf("fleet config: %d %v", code, out)
	}
	return e
}

// api calls the HTTP API as a user ("" for none); a string body is sent
// as it is, anything else as JSON.
func (e *env) api(t *testing.T, user, method, path string, body any, raw ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	switch {
	case len(raw) > 0:
		rd = strings.NewReader(raw[0])
	case body != nil:
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.base+path, rd)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+e.tokens[user])
	}
	res, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if out == nil {
		out = map[string]any{"body": string(b)}
	}
	return res.StatusCode, out
}

// dialMQTT connects a paho client over TLS; it fails as the broker says.
func (e *env) dialMQTT(t *testing.T, user, pw string, opts ...func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("ssl://" + e.mqtt).SetClientID(fmt.Sprintf("%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(pw).SetTLSConfig(e.client).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	for _, f := range opts {
		f(o)
	}
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("no answer")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { cl.Disconnect(10) })
	return cl, nil
}

// rawTLS opens a TLS connection to the broker from a loopback address of
// its own choosing, without sending anything.
func (e *env) rawTLS(t *testing.T, from string) net.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", e.mqtt, e.client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func heap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func birth(name string, alias uint64, path string, ts uint64) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Name: proto.String(name), Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ts), Datatype: proto.Uint32(uint32(pb.DataType_Double)),
		Value: &pb.Payload_Metric_DoubleValue{DoubleValue: 1}}
	if path != "" {
		m.Properties = &pb.Payload_PropertySet{Keys: []string{sparkplug.PropUNSPath, sparkplug.PropWritable}, Values: []*pb.Payload_PropertyValue{
			{Type: proto.Uint32(uint32(pb.DataType_String)), Value: &pb.Payload_PropertyValue_StringValue{StringValue: path}},
			{Type: proto.Uint32(uint32(pb.DataType_Boolean)), Value: &pb.Payload_PropertyValue_BooleanValue{BooleanValue: false}}}}
	}
	return m
}

func send(t *testing.T, cl paho.Client, topic string, p *pb.Payload, retain bool) {
	t.Helper()
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	tok := cl.Publish(topic, 1, retain, b)
	tok.WaitTimeout(5 * time.Second)
	if tok.Error() != nil {
		t.Fatal(tok.Error())
	}
}

// TestAttacks is the table: each row an attack, the refusal it must
// meet, and what records it.
func TestAttacks(t *testing.T) {
	e := startEnv(t)
	for _, row := range append([]attack{
		{"sql reads a file through a CTE named like it", func(t *testing.T, e *env) {
			secret := filepath.Join(t.TempDir(), "secret.csv")
			os.WriteFile(secret, []byte("k,v\nkey,"+secrets+"\n"), 0o600)
			for _, q := range []string{
				`SELECT b.* FROM (WITH "` + secret + `" AS (SELECT 1) SELECT 1) a, '` + secret + `' b`,
				`SELECT * FROM '` + filepath.Dir(secret) + `/*.csv'`,
				`SELECT * FROM read_csv('` + secret + `')`,
			} {
				code, out := e.api(t, "eng", "POST", "/api/v1/sql", map[string]any{"query": q})
				if code != 400 || strings.Contains(fmt.Sprint(out), secrets) {
					t.Errorf("%s: %d %v", q, code, out)
				}
			}
			code, out := e.api(t, "admin", "GET", "/api/v1/audit", nil)
			if code != 200 || !strings.Contains(fmt.Sprint(out), "refused") {
				t.Errorf("no audit line of the refused query: %d", code)
			}
		}},
		{"sql of an engineer reads the audit log", func(t *testing.T, e *env) {
			for _, q := range []string{`SELECT * FROM audit`, `SELECT b.* FROM (WITH audit AS (SELECT 1) SELECT 1) a, audit b`} {
				if code, out := e.api(t, "eng", "POST", "/api/v1/sql", map[string]any{"query": q}); code != 400 {
					t.Errorf("%s: %d %v", q, code, out)
				}
			}
			if code, out := e.api(t, "admin", "POST", "/api/v1/sql", map[string]any{"query": `SELECT count(*) FROM audit`}); code != 200 {
				t.Errorf("admin: %d %v", code, out)
			}
		}},
		{"sql error echoes the wrapped statement", func(t *testing.T, e *env) {
			code, out := e.api(t, "eng", "POST", "/api/v1/sql", map[string]any{"query": "SELECT nope FROM points"})
			if msg := fmt.Sprint(out["error"]); code != 400 || strings.Contains(msg, "LIMIT") {
				t.Errorf("%d %v", code, out)
			}
		}},
		{"an edge's birth claims another edge's UNS path", func(t *testing.T, e *env) {
			e1, err := e.dialMQTT(t, "e1", "pw-e1")
			if err != nil {
				t.Fatal(err)
			}
			e2, err := e.dialMQTT(t, "e2", "pw-e2")
			if err != nil {
				t.Fatal(err)
			}
			ts := uint64(time.Now().UnixMilli())
			bd := &pb.Payload_Metric{Name: proto.String(sparkplug.MetricBdSeq), Datatype: proto.Uint32(uint32(pb.DataType_Int64)), Value: &pb.Payload_Metric_LongValue{LongValue: 0}}
			for _, n := range []struct {
				cl   paho.Client
				edge string
			}{{e1, "e1"}, {e2, "e2"}} {
				send(t, n.cl, "spBv1.0/g/NBIRTH/"+n.edge, &pb.Payload{Timestamp: proto.Uint64(ts), Seq: proto.Uint64(0), Metrics: []*pb.Payload_Metric{bd}}, false)
			}
			send(t, e1, "spBv1.0/g/DBIRTH/e1/pump", &pb.Payload{Timestamp: proto.Uint64(ts), Seq: proto.Uint64(1), Metrics: []*pb.Payload_Metric{birth("sp", 1, "ent/s/a/l/pump/sp", ts)}}, false)
			edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				if _, ok := e.cloud.Registry.Get("ent/s/a/l/pump/sp"); !ok {
					return errors.New("e1's tag not defined")
				}
				return nil
			})
			before := e.cloud.Host.Stats().ForeignClaims
			send(t, e2, "spBv1.0/g/DBIRTH/e2/x", &pb.Payload{Timestamp: proto.Uint64(ts), Seq: proto.Uint64(1), Metrics: []*pb.Payload_Metric{birth("sp", 1, "ent/s/a/l/pump/sp", ts)}}, false)
			edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				if n := e.cloud.Host.Stats().ForeignClaims; n != before+1 {
					return fmt.Errorf("foreign claims %d", n)
				}
				return nil
			})
			if tag, _ := e.cloud.Registry.Get("ent/s/a/l/pump/sp"); tag.Sparkplug.Edge != "e1" {
				t.Errorf("owner %s", tag.Sparkplug.Edge)
			}
			// The refusal is logged once the whole birth is learnt, just
			// after it is counted.
			edgetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if !e.logs.has("birth refused: its metrics name UNS paths of another edge node") {
					return errors.New("no log line")
				}
				return nil
			})
		}},
		{"a flood of silent sockets", func(t *testing.T, e *env) {
			before := heap()
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 5 * time.Second}
			var conns []net.Conn
			for range 200 {
				c, err := d.Dial("tcp", e.mqtt)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				t.Cleanup(func() { c.Close() })
			}
			edgetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if st := e.cloud.Broker.Stats().Listener; st.RefusedAddress < 150 {
					return fmt.Errorf("stats %+v", st)
				}
				return nil
			})
			if grown := heap() - before; grown > 64<<20 {
				t.Errorf("heap grew by %d MiB", grown>>20)
			}
			for _, c := range conns {
				if !mqttraw.ClosedWithin(c, 3*time.Second) {
					t.Fatal("a silent socket outlived the CONNECT deadline")
				}
			}
			if _, err := e.dialMQTT(t, "reader", "pw-reader"); err != nil {
				t.Fatalf("a client after the flood: %v", err)
			}
			if code, out := e.api(t, "", "GET", "/readyz", nil); code != 200 {
				t.Fatalf("readyz after the flood: %d %v", code, out)
			}
		}},
		{"a first packet announcing 256 MiB", func(t *testing.T, e *env) {
			before := heap()
			for range 8 {
				c := e.rawTLS(t, "127.0.0.4")
				c.Write([]byte{0x10, 0x80, 0x80, 0x80, 0x7f})
				if !mqttraw.ClosedWithin(c, 2*time.Second) {
					t.Fatal("connection kept")
				}
			}
			if grown := heap() - before; grown > 64<<20 {
				t.Errorf("heap grew by %d MiB", grown>>20)
			}
			if n := e.cloud.Broker.Stats().Listener.BadFirstPacket; n < 8 {
				t.Errorf("counted %d", n)
			}
		}},
		{"a packet over max_packet_size after CONNECT", func(t *testing.T, e *env) {
			c := e.rawTLS(t, "127.0.0.5")
			if ack := mqttraw.Connect(t, c, mqttraw.Session{ID: "big", User: "reader", Password: "pw-reader", Clean: true}); ack.ReasonCode != 0 {
				t.Fatalf("connect: %#x", ack.ReasonCode)
			}
			c.Write([]byte{0x30, 0x80, 0x80, 0x80, 0x7f})
			if !mqttraw.ClosedWithin(c, 2*time.Second) {
				t.Fatal("connection kept")
			}
			edgetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if n := e.cloud.Broker.Stats().Limits.PacketsTooLarge; n < 1 {
					return errors.New("not counted")
				}
				return nil
			})
		}},
		{"read-only sessions kept forever hold the retained values", func(t *testing.T, e *env) {
			for i := range 5000 {
				e.cloud.Broker.PublishRetained(fmt.Sprintf("uns/ent/s/a/l/m/t%d", i), bytes.Repeat([]byte("x"), 200))
			}
			before := heap()
			refused := 0
			for i := range 15 {
				c := e.rawTLS(t, "127.0.0.6")
				ack := mqttraw.Connect(t, c, mqttraw.Session{ID: fmt.Sprint("keep", i), User: "reader", Password: "pw-reader", Version: 5, Expiry: 0xffffffff, Subscribe: "#"})
				if ack.ReasonCode != 0 {
					refused++
				} else if ack.Properties.SessionExpiryInterval != 3600 {
					t.Errorf("session expiry granted %d", ack.Properties.SessionExpiryInterval)
				}
				time.Sleep(50 * time.Millisecond)
				c.Close()
			}
			if refused != 5 {
				t.Errorf("%d sessions refused, want the 5 over the cap of 10", refused)
			}
			if grown := heap() - before; grown > 256<<20 {
				t.Errorf("heap grew by %d MiB", grown>>20)
			}
		}},
		{"the NATS port without credentials, or writing the accounts bucket", func(t *testing.T, e *env) {
			url := e.cloud.Bus.ClientURL()
			if nc, err := nats.Connect(url, nats.Secure(e.client), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
				nc.Close()
				t.Error("anonymous NATS client connected")
			}
			if nc, err := nats.Connect(url, nats.UserInfo("analytics", "pw-nats"), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
				nc.Close()
				t.Error("a plain NATS client connected to the TLS port")
			}
			denied := make(chan error, 1)
			nc, err := nats.Connect(url, nats.UserInfo("analytics", "pw-nats"), nats.Secure(e.client), nats.NoReconnect(),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.Publish("$KV.CALX_MQTT_USERS.evil", []byte(`{"username":"evil","role":"custom","publish":["#"]}`))
			select {
			case err := <-denied:
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Errorf("%v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("the write to the accounts bucket was not refused")
			}
		}},
		{"fleet secrets to a viewer", func(t *testing.T, e *env) {
			for _, p := range []string{"/api/v1/config", "/api/v1/instances", "/api/v1/config/edges", "/api/v1/templates"} {
				code, out := e.api(t, "vera", "GET", p, nil)
				if code != 200 || strings.Contains(fmt.Sprint(out), secrets) {
					t.Errorf("%s: %d shows the secret", p, code)
				}
			}
		}},
		{"a custom account acts as the host", func(t *testing.T, e *env) {
			e1, err := e.dialMQTT(t, "e1", "pw-e1")
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan string, 10)
			e1.Subscribe("spBv1.0/g/DCMD/e1/#", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }).WaitTimeout(5 * time.Second)
			e1.Subscribe("calx/receipt/g/e1", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }).WaitTimeout(5 * time.Second)
			mes, err := e.dialMQTT(t, "mes", "pw-mes")
			if err != nil {
				t.Fatal(err)
			}
			before := e.cloud.Broker.Stats().AuthDenied
			for _, topic := range []string{"spBv1.0/STATE/calx", "spBv1.0/g/DCMD/e1/pump", "calx/receipt/g/e1", "spBv1.0/g/DDATA/e1/pump", "uns/ent/s/a/l/pump/sp"} {
				// QoS 0: a refused QoS 1 publish of MQTT 3.1.1 ends the connection.
				mes.Publish(topic, 0, false, []byte(`{"count":999}`)).WaitTimeout(5 * time.Second)
			}
			edgetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if n := e.cloud.Broker.Stats().AuthDenied - before; n != 5 {
					return fmt.Errorf("%d refusals counted, want 5", n)
				}
				return nil
			})
			select {
			case topic := <-got:
				t.Errorf("the edge got %s from a custom account", topic)
			case <-time.After(300 * time.Millisecond):
			}
		}},
		{"retained Sparkplug data", func(t *testing.T, e *env) {
			e1, err := e.dialMQTT(t, "e1", "pw-e1")
			if err != nil {
				t.Fatal(err)
			}
			before := e.cloud.Broker.Stats().RetainCleared
			ts := uint64(time.Now().UnixMilli())
			send(t, e1, "spBv1.0/g/DDATA/e1/pump", &pb.Payload{Timestamp: proto.Uint64(ts), Seq: proto.Uint64(2), Metrics: []*pb.Payload_Metric{birth("sp", 1, "", ts)}}, true)
			if n := e.cloud.Broker.Stats().RetainCleared - before; n != 1 {
				t.Errorf("retain cleared %d", n)
			}
		}},
		{"guessing MQTT passwords", func(t *testing.T, e *env) {
			before := e.cloud.Broker.Stats().Logins.Throttled
			for i := range 15 {
				e.dialMQTT(t, "e2", fmt.Sprint("guess", i))
			}
			if n := e.cloud.Broker.Stats().Logins.Throttled - before; n < 4 {
				t.Errorf("throttled %d of 15 guesses", n)
			}
			if !e.logs.has("too many failed logins") {
				t.Error("no log line")
			}
		}},
		{"a revoked account keeps its session", func(t *testing.T, e *env) {
			lost := make(chan struct{})
			if _, err := e.dialMQTT(t, "mes", "pw-mes", func(o *paho.ClientOptions) {
				o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
			}); err != nil {
				t.Fatal(err)
			}
			if code, out := e.api(t, "admin", "POST", "/api/v1/mqtt-users/mes/disable", nil); code != 200 {
				t.Fatalf("disable: %d %v", code, out)
			}
			select {
			case <-lost:
			case <-time.After(5 * time.Second):
				t.Fatal("the session outlived the disable")
			}
			if _, err := e.dialMQTT(t, "mes", "pw-mes"); err == nil {
				t.Error("a disabled account logged in")
			}
			if code, _ := e.api(t, "eng", "POST", "/api/v1/mqtt-users/mes/enable", nil); code != 403 {
				t.Errorf("an engineer enabled an account: %d", code)
			}
			code, out := e.api(t, "admin", "GET", "/api/v1/audit", nil)
			if code != 200 || !strings.Contains(fmt.Sprint(out), "disable-mqtt-user") {
				t.Error("no audit line")
			}
		}},
		{"an anonymous MQTT client, or an edge as another", func(t *testing.T, e *env) {
			if _, err := e.dialMQTT(t, "", ""); err == nil {
				t.Error("anonymous client connected")
			}
			e2, err := e.dialMQTT(t, "e2", "pw-e2")
			if err != nil {
				t.Fatal(err)
			}
			if tok := e2.Subscribe("spBv1.0/g/NCMD/e1", 1, nil); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				if st, ok := tok.(*paho.SubscribeToken); ok && st.Result()["spBv1.0/g/NCMD/e1"] != 0x80 {
					t.Error("e2 subscribed to e1's commands")
				}
			}
			before := e.cloud.Broker.Stats().Persisted
			e2.Publish("spBv1.0/g/NDATA/e1", 1, false, []byte{}).WaitTimeout(5 * time.Second)
			if e.cloud.Broker.Stats().Persisted != before {
				t.Error("e2's publish as e1 was persisted")
			}
		}},
		{"TLS 1.0 and 1.1 on every listener", func(t *testing.T, e *env) {
			old := &tls.Config{RootCAs: e.cert.Pool, MaxVersion: tls.VersionTLS11}
			for _, addr := range []string{e.mqtt, e.web.Addr(), strings.TrimPrefix(e.cloud.Bus.ClientURL(), "nats://")} {
				c, err := tls.Dial("tcp", addr, old)
				if err == nil {
					// NATS sends its INFO in the clear first: the TLS
					// handshake then fails on the client's first read.
					c.Close()
					if addr != strings.TrimPrefix(e.cloud.Bus.ClientURL(), "nats://") {
						t.Errorf("%s: TLS 1.1 accepted", addr)
					}
				}
			}
			if nc, err := nats.Connect(e.cloud.Bus.ClientURL(), nats.UserInfo("analytics", "pw-nats"), nats.Secure(old), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
				nc.Close()
				t.Error("NATS: TLS 1.1 accepted")
			}
		}},
		{"a write from a foreign page with the session cookie", func(t *testing.T, e *env) {
			req, _ := http.NewRequest("POST", e.base+"/api/v1/mqtt-users/mes/enable", nil)
			req.AddCookie(&http.Cookie{Name: "calx_session", Value: e.tokens["admin"]})
			req.Header.Set("Origin", "https://evil.example")
			res, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 403 {
				t.Errorf("cross-site write: %d", res.StatusCode)
			}
		}},
		{"HTTP: listing, metrics without a token, HSTS, a connection flood", func(t *testing.T, e *env) {
			if code, _ := e.api(t, "", "GET", "/static/", nil); code != 404 {
				t.Errorf("/static/: %d", code)
			}
			if code, _ := e.api(t, "", "GET", "/metrics", nil); code != 401 {
				t.Errorf("/metrics without a token: %d", code)
			}
			req, _ := http.NewRequest("GET", e.base+"/metrics", nil)
			req.Header.Set("Authorization", "Bearer "+e.metrics)
			res, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || !strings.Contains(string(body), "calx_broker_connections_refused_total") {
				t.Errorf("/metrics with the token: %d", res.StatusCode)
			}
			if res.Header.Get("Strict-Transport-Security") == "" {
				t.Error("no HSTS over HTTPS")
			}
			// 40 connections from one address, then a look at each at
			// once: the 20 under the cap wait for their TLS handshake (10 s),
			// the 20 over it are closed as soon as they are accepted.
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}}
			var conns []net.Conn
			for range 40 {
				c, err := d.Dial("tcp", e.web.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				conns = append(conns, c)
			}
			var mu sync.Mutex
			var wg sync.WaitGroup
			closed := 0
			for _, c := range conns {
				wg.Go(func() {
					if mqttraw.ClosedWithin(c, time.Second) {
						mu.Lock()
						closed++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if closed != 20 {
				t.Errorf("%d of 40 connections from one address closed at once, want the 20 over the cap", closed)
			}
		}},
		{"the edge's site broker: anonymous, a reader's Will on uns/", func(t *testing.T, e *env) {
			h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
			lb, err := edge.NewLocalBroker(edge.LocalBrokerOptions{Listen: "127.0.0.1:0", Users: []edge.LocalUser{{Username: "hmi", PasswordHash: string(h), Role: edge.LocalReader}}})
			if err != nil {
				t.Fatal(err)
			}
			if err := lb.Start(); err != nil {
				t.Fatal(err)
			}
			defer lb.Shutdown(context.Background())
			for name, o := range map[string]*paho.ClientOptions{
				"anonymous":   paho.NewClientOptions(),
				"reader will": paho.NewClientOptions().SetUsername("hmi").SetPassword("pw").SetWill("uns/ent/s/a/l/m/t", "forged", 0, true),
			} {
				o.AddBroker("tcp://" + lb.Addr()).SetClientID(name).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
				cl := paho.NewClient(o)
				if tok := cl.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
					cl.Disconnect(10)
					t.Errorf("%s: connected", name)
				}
			}
		}},
	}, scopeAttacks...) {
		t.Run(row.name, func(t *testing.T) { row.attack(t, e) })
	}
}

// attack is a row of the table.
type attack struct {
	name   string
	attack func(t *testing.T, e *env)
}
