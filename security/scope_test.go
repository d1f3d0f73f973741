package security

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/oidctest"
)

// Tags of two sites: Ghent on edge g/e1, Lyon on edge g/e2.
const (
	ghentTag = "ent/ghent/a/l/kiln/temp"
	lyonTag  = "ent/lyon/a/l/kiln/temp"
)

func defineSites(t *testing.T, e *env) {
	t.Helper()
	now := time.Now()
	for path, edge := range map[string]string{ghentTag: "e1", lyonTag: "e2"} {
		tag := uns.Tag{Path: uns.Path(path), DataType: uns.TypeFloat64, Writable: true, Sparkplug: uns.SparkplugAddr{Group: "g", Edge: edge, Device: "kiln", Metric: "temp"}}
		e.cloud.Registry.Define(tag)
		if err := e.cloud.Historian.UpsertTags(context.Background(), []uns.Tag{tag}); err != nil {
			t.Fatal(err)
		}
		s := uns.Sample{Path: uns.Path(path), TS: now, Value: uns.Float(900), Quality: uns.Good}
		e.cloud.Registry.Update([]uns.Sample{s})
		if err := e.cloud.Historian.WriteBatch(context.Background(), []uns.Sample{s}); err != nil {
			t.Fatal(err)
		}
	}
}

// liveEnds opens the live feed with a token and reports whether it ends
// with signed-out within d, once after() ran.
func (e *env) liveEnds(t *testing.T, tok string, d time.Duration, after func()) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/api/v1/live", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	client := &http.Client{Transport: e.http.Transport}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("live: %d", res.StatusCode)
	}
	after()
	ended := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(res.Body)
		said := false
		for sc.Scan() {
			said = said || sc.Text() == "event: signed-out"
		}
		ended <- said
	}()
	select {
	case said := <-ended:
		return said
	case <-time.After(d):
		return false
	}
}

var scopeAttacks = []attack{
	{"single sign-on: a group mapped to Ghent reads Lyon; a tampered ID token", func(t *testing.T, e *env) {
		defineSites(t, e)
		signIn := func() (*http.Client, int, string) {
			jar, _ := cookiejar.New(nil)
			b := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: e.client}}
			res, _ := e.idp.SignIn(t, b, e.base+"/auth/oidc/login", "ghent-sso", "pw-ghent-sso")
			u, _ := url.Parse(e.base)
			for _, c := range jar.Cookies(u) {
				if c.Name == "calx_session" {
					return b, res.StatusCode, c.Value
				}
			}
			return b, res.StatusCode, ""
		}
		_, code, tok := signIn()
		if code != 200 || tok == "" {
			t.Fatalf("sign-in: %d", code)
		}
		e.tokens["ghent-sso"] = tok
		if code, out := e.api(t, "ghent-sso", "GET", "/api/v1/history?path="+lyonTag, nil); code != 404 {
			t.Errorf("Lyon's history: %d %v", code, out)
		}
		if code, out := e.api(t, "ghent-sso", "GET", "/api/v1/namespace", nil); code != 200 || strings.Contains(fmt.Sprint(out), "lyon") || !strings.Contains(fmt.Sprint(out), ghentTag) {
			t.Errorf("namespace: %d %v", code, out)
		}
		e.idp.Tamper(func(tok string) string {
			return oidctest.ChangeClaims(tok, func(c map[string]any) { c["groups"] = []string{"admins"}; c["preferred_username"] = "admin" })
		})
		defer e.idp.Tamper(nil)
		if _, code, tok := signIn(); code != 403 || tok != "" {
			t.Errorf("tampered ID token: %d, session %t", code, tok != "")
		}
	}},
	{"a Ghent user reads Lyon: namespace, latest, history, export, live, alarms, cycles", func(t *testing.T, e *env) {
		defineSites(t, e)
		for _, p := range []string{"/api/v1/namespace?prefix=ent/lyon", "/api/v1/latest?prefix=ent/lyon", "/api/v1/alarms?device=ent/lyon",
			"/api/v1/alarms/journal?alarm=ent/lyon", "/api/v1/cycles?machine=ent/lyon"} {
			if code, out := e.api(t, "ghent-op", "GET", p, nil); code != 200 || out["count"] != 0.0 {
				t.Errorf("GET %s: %d %v", p, code, out)
			}
		}
		for _, p := range []string{"/api/v1/history?path=" + lyonTag, "/api/v1/history?path=" + lyonTag + "&format=parquet",
			"/api/v1/history?path=" + lyonTag + "&format=csv", "/api/v1/live?prefix=ent/lyon"} {
			if code, out := e.api(t, "ghent-op", "GET", p, nil); code != 404 {
				t.Errorf("GET %s: %d %v", p, code, out)
			}
		}
		if code, out := e.api(t, "ghent-op", "GET", "/api/v1/namespace", nil); code != 200 || strings.Contains(fmt.Sprint(out), "lyon") || !strings.Contains(fmt.Sprint(out), ghentTag) {
			t.Errorf("namespace of a Ghent user: %d %v", code, out)
		}
	}},
	{"a viewer writes a tag; an operator changes the config", func(t *testing.T, e *env) {
		if code, out := e.api(t, "vera", "POST", "/api/v1/write", map[string]any{"path": ghentTag, "value": 1}); code != 403 {
			t.Errorf("viewer write: %d %v", code, out)
		}
		if code, out := e.api(t, "ghent-op", "PUT", "/api/v1/config", nil, "edges: []\n"); code != 403 {
			t.Errorf("operator PUT config: %d %v", code, out)
		}
	}},
	{"an engineer scoped to Ghent rolls out to Lyon, or writes Lyon's tag", func(t *testing.T, e *env) {
		if code, out := e.api(t, "ghent-eng", "POST", "/api/v1/rollouts", map[string]any{"version": 1, "edge": "g/e2"}); code != 404 {
			t.Errorf("rollout to Lyon's edge: %d %v", code, out)
		}
		if code, out := e.api(t, "ghent-eng", "POST", "/api/v1/rollouts", map[string]any{"version": 1, "all": true}); code != 403 {
			t.Errorf("rollout to all: %d %v", code, out)
		}
		if code, out := e.api(t, "ghent-eng", "POST", "/api/v1/write", map[string]any{"path": lyonTag, "value": 1}); code != 404 {
			t.Errorf("write to Lyon's tag: %d %v", code, out)
		}
	}},
	{"an expired and a revoked API token", func(t *testing.T, e *env) {
		code, out := e.api(t, "admin", "POST", "/api/v1/tokens", map[string]any{"name": "script", "role": "viewer", "days": 1})
		if code != 201 {
			t.Fatalf("token: %d %v", code, out)
		}
		e.tokens["script"] = out["token"].(string)
		id := out["id"].(string)
		if code, _ := e.api(t, "script", "GET", "/api/v1/namespace", nil); code != 200 {
			t.Fatalf("a fresh token: %d", code)
		}
		// Expired: its record in the past, read by a second server of the same cloud.
		ts, err := e.cloud.APITokens(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range ts {
			if tk.ID == id {
				tk.Expires = time.Now().Add(-time.Second)
				if err := e.cloud.PutAPIToken(context.Background(), tk); err != nil {
					t.Fatal(err)
				}
			}
		}
		auth, err := web.NewAuth([]web.User{{Username: "admin", PasswordHash: hash(t, "pw-admin"), Role: web.RoleAdmin}})
		if err != nil {
			t.Fatal(err)
		}
		second, err := web.New(web.Options{Listen: "127.0.0.1:0", TLS: e.srvTLS, Cloud: e.cloud, Auth: auth})
		if err != nil {
			t.Fatal(err)
		}
		if err := second.Start(); err != nil {
			t.Fatal(err)
		}
		defer second.Shutdown(context.Background())
		req, _ := http.NewRequest("GET", "https://"+second.Addr()+"/api/v1/namespace", nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["script"])
		res, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			t.Errorf("an expired token: %d", res.StatusCode)
		}
		if code, _ := e.api(t, "admin", "DELETE", "/api/v1/tokens/"+id, nil); code != 200 {
			t.Fatalf("revoke: %d", code)
		}
		if code, _ := e.api(t, "script", "GET", "/api/v1/namespace", nil); code != 401 {
			t.Errorf("a revoked token: %d", code)
		}
	}},
	{"a removed user's live session", func(t *testing.T, e *env) {
		if code, out := e.api(t, "admin", "POST", "/api/v1/users", map[string]any{"username": "temp", "password": "temp-password-1", "role": "viewer"}); code != 201 {
			t.Fatalf("create: %d %v", code, out)
		}
		code, out := e.api(t, "", "POST", "/api/v1/login", map[string]string{"username": "temp", "password": "temp-password-1"})
		if code != 200 {
			t.Fatalf("login: %d %v", code, out)
		}
		e.tokens["temp"] = out["token"].(string)
		ended := e.liveEnds(t, e.tokens["temp"], 10*time.Second, func() {
			if code, _ := e.api(t, "admin", "DELETE", "/api/v1/users/temp", nil); code != 200 {
				t.Fatalf("delete: %d", code)
			}
		})
		if !ended {
			t.Error("the removed user's live stream goes on")
		}
		if code, _ := e.api(t, "temp", "GET", "/api/v1/namespace", nil); code != 401 {
			t.Errorf("the removed user's session: %d", code)
		}
	}},
	{"an mTLS certificate of edge e1 used as edge e2", func(t *testing.T, e *env) {
		cert := e.cert.Client(t, "e1")
		withCert := func(o *paho.ClientOptions) {
			o.SetTLSConfig(&tls.Config{RootCAs: e.cert.Pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		}
		if _, err := e.dialMQTT(t, "e1", "", withCert); err != nil {
			t.Fatalf("e1 with its certificate: %v", err)
		}
		for _, pw := range []string{"", "pw-e2"} {
			if _, err := e.dialMQTT(t, "e2", pw, withCert); err == nil {
				t.Errorf("e1's certificate signed in as e2 (password %q)", pw)
			}
		}
	}},
	{"a scoped MQTT reader subscribes outside its scope", func(t *testing.T, e *env) {
		cl, err := e.dialMQTT(t, "ghent-hmi", "pw-ghent-hmi")
		if err != nil {
			t.Fatal(err)
		}
		for filter, ok := range map[string]bool{"uns/ent/ghent/#": true, "uns/ent/lyon/#": false, "uns/#": false, "$SYS/#": false, "spBv1.0/#": false} {
			tok := cl.Subscribe(filter, 0, nil)
			tok.WaitTimeout(5 * time.Second)
			if granted := tok.(*paho.SubscribeToken).Result()[filter] < 0x80; granted != ok {
				t.Errorf("subscribe %s: granted %v", filter, granted)
			}
		}
	}},
}
