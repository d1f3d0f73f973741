package web_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/oidctest"
	"github.com/calx-iiot/calx/web/webtest"
)

// ssoSite is a cloud with single sign-on through a real OpenID Connect
// provider, whose groups ghent-shift (operator, Ghent) and calx-admins
// (admin) are mapped; a tag in Ghent and one in Namur.
func ssoSite(t *testing.T) (*webtest.App, *oidctest.Provider) {
	t.Helper()
	idp := oidctest.Start(t)
	idp.AddUser("anna", "anna-idp-password", "staff", "ghent-shift")
	idp.AddUser("bert", "bert-idp-password", "canteen")
	idp.AddUser("admin", "admin-idp-password", "calx-admins")
	app := webtest.StartWith(t, cloud.Options{}, web.Options{OIDC: &web.OIDC{
		Issuer: idp.Issuer, ClientID: "calx", ClientSecret: "calx-client-secret", Label: "Plant account",
		Groups: []web.GroupRole{
			{Group: "calx-admins", Role: web.RoleAdmin},
			{Group: "ghent-shift", Role: web.RoleOperator, Scope: web.Scope{"limeworks/ghent"}},
		},
	}})
	idp.AddClient("calx", "calx-client-secret", app.Base+"/auth/oidc/callback")
	now := time.Now().UTC()
	var samples []uns.Sample
	for _, dev := range []string{ghent, namur} {
		p := uns.Path(dev + "/burning_zone_temp")
		app.Cloud.Registry.Define(uns.Tag{Path: p, DataType: uns.TypeFloat64})
		samples = append(samples, uns.Sample{Path: p, TS: now, Value: uns.Float(1100), Quality: uns.Good})
	}
	app.Cloud.Registry.Update(samples)
	return app, idp
}

// browser is an HTTP client with cookies, as a browser is.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

// sessionOf is the Calx session the browser holds, as an API client.
func sessionOf(t *testing.T, app *webtest.App, b *http.Client) *webtest.Client {
	t.Helper()
	u, _ := http.NewRequest("GET", app.Base+"/", nil)
	for _, c := range b.Jar.Cookies(u.URL) {
		if c.Name == "calx_session" {
			return &webtest.Client{T: t, Base: app.Base, Token: c.Value}
		}
	}
	return nil
}

func TestSSOGroupGivesRoleAndScope(t *testing.T) {
	app, idp := ssoSite(t)
	b := browser(t)
	// The sign-in page offers the provider.
	res, err := b.Get(app.Base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	res, body := idp.SignIn(t, b, app.Base+"/auth/oidc/login", "anna", "anna-idp-password")
	if res.StatusCode != 200 || res.Request.URL.Path != "/" || !strings.Contains(body, "anna") {
		t.Fatalf("after signing in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
	anna := sessionOf(t, app, b)
	if anna == nil {
		t.Fatal("no session cookie after single sign-on")
	}
	code, out := anna.Do("GET", "/api/v1/namespace", nil)
	if code != 200 || !strings.Contains(fmt.Sprint(out), "ghent") || strings.Contains(fmt.Sprint(out), "namur") {
		t.Errorf("namespace of anna (Ghent shift): %d %v", code, out)
	}
	if code, out := anna.Do("GET", "/api/v1/history?path="+namur+"/burning_zone_temp", nil); code != 404 {
		t.Errorf("Namur's history for anna: %d %v", code, out)
	}
	if code, out := anna.Do("POST", "/api/v1/write", map[string]any{"path": ghent + "/burning_zone_temp", "value": 1}); code != 403 {
		t.Errorf("anna (operator) writes: %d %v", code, out)
	}
	if code, out := anna.Do("POST", "/api/v1/me/password", map[string]string{"current": "x", "new": "a-new-password-1"}); code != 409 {
		t.Errorf("anna changes a password Calx does not keep: %d %v", code, out)
	}
	// Admins see the sign-in in the audit log and can end it.
	admin := app.Admin()
	if _, out := admin.Do("GET", "/api/v1/audit", nil); !strings.Contains(fmt.Sprint(out), "sso-sign-in") {
		t.Errorf("no audit entry of the sign-in: %v", out)
	}
	if code, out := admin.Do("POST", "/api/v1/users/anna/sign-out", nil); code != 200 || out["ended"] != 1.0 {
		t.Errorf("sign anna out: %d %v", code, out)
	}
	if code, _ := anna.Do("GET", "/api/v1/namespace", nil); code != 401 {
		t.Errorf("anna after being signed out: %d", code)
	}
}

func TestSSORefused(t *testing.T) {
	app, idp := ssoSite(t)
	cases := []struct {
		name, user, password string
		tamper               func(string) string
		want                 int
		says                 string
	}{
		{"a group Calx does not map", "bert", "bert-idp-password", nil, 403, "none of the groups"},
		{"claims changed, signature kept", "anna", "anna-idp-password", func(tok string) string {
			return oidctest.ChangeClaims(tok, func(c map[string]any) { c["groups"] = []string{"calx-admins"} })
		}, 403, "not valid"},
		{"signed with a key not the provider's", "anna", "anna-idp-password", func(tok string) string {
			return oidctest.SignElsewhere(tok, func(c map[string]any) { c["groups"] = []string{"calx-admins"} })
		}, 403, "not valid"},
		{"another audience", "anna", "anna-idp-password", func(tok string) string {
			return oidctest.SignElsewhere(tok, func(c map[string]any) { c["aud"] = "grafana" })
		}, 403, "not valid"},
		{"a local user's name", "admin", "admin-idp-password", nil, 409, "local Calx user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			idp.Tamper(c.tamper)
			defer idp.Tamper(nil)
			b := browser(t)
			res, body := idp.SignIn(t, b, app.Base+"/auth/oidc/login", c.user, c.password)
			if res.StatusCode != c.want || !strings.Contains(body, c.says) {
				t.Errorf("%d at %s, want %d saying %q: %s", res.StatusCode, res.Request.URL, c.want, c.says, body)
			}
			if s := sessionOf(t, app, b); s != nil {
				t.Errorf("a session after a refused sign-in")
			}
		})
	}
	t.Run("an ID token of an earlier sign-in replayed", func(t *testing.T) {
		var earlier string
		idp.Tamper(func(tok string) string { earlier = tok; return tok })
		if res, _ := idp.SignIn(t, browser(t), app.Base+"/auth/oidc/login", "anna", "anna-idp-password"); res.StatusCode != 200 || earlier == "" {
			t.Fatalf("first sign-in: %d", res.StatusCode)
		}
		idp.Tamper(func(string) string { return earlier })
		defer idp.Tamper(nil)
		b := browser(t)
		res, body := idp.SignIn(t, b, app.Base+"/auth/oidc/login", "anna", "anna-idp-password")
		if res.StatusCode != 403 || !strings.Contains(body, "nonce") || sessionOf(t, app, b) != nil {
			t.Errorf("replayed ID token: %d %s", res.StatusCode, body)
		}
	})
	t.Run("a callback whose state is not the one started", func(t *testing.T) {
		b := browser(t)
		res, err := b.Get(app.Base + "/auth/oidc/login") // started: the cookie is set
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		res, err = b.Get(app.Base + "/auth/oidc/callback?code=stolen&state=forged")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 || !strings.Contains(string(body), "state does not match") || sessionOf(t, app, b) != nil {
			t.Errorf("forged state: %d %s", res.StatusCode, body)
		}
	})
	t.Run("a callback this browser did not start", func(t *testing.T) {
		b := browser(t)
		res, err := b.Get(app.Base + "/auth/oidc/callback?code=stolen&state=forged")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 400 || sessionOf(t, app, b) != nil {
			t.Errorf("forged callback: %d", res.StatusCode)
		}
	})
}

func TestSSOProviderDown(t *testing.T) {
	app := webtest.StartWith(t, cloud.Options{}, web.Options{OIDC: &web.OIDC{
		Issuer: "http://127.0.0.1:1", ClientID: "calx", Groups: []web.GroupRole{{Group: "g", Role: web.RoleViewer}},
	}})
	res, err := browser(t).Get(app.Base + "/auth/oidc/login")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 502 {
		t.Errorf("sign-in with the provider down: %d", res.StatusCode)
	}
	// Local users still sign in.
	app.Admin()
}

func TestOIDCValidate(t *testing.T) {
	good := web.OIDC{Issuer: "https://login.plant.example/realms/calx", ClientID: "calx", Groups: []web.GroupRole{{Group: "g", Role: web.RoleViewer}}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		change func(*web.OIDC)
		says   string
	}{
		{func(o *web.OIDC) { o.Issuer = "http://login.plant.example" }, "want https"},
		{func(o *web.OIDC) { o.Issuer = "" }, "issuer"},
		{func(o *web.OIDC) { o.ClientID = "" }, "client_id"},
		{func(o *web.OIDC) { o.Groups = nil }, "no one can sign in"},
		{func(o *web.OIDC) { o.Groups = []web.GroupRole{{Group: "g", Role: "boss"}} }, "role"},
		{func(o *web.OIDC) {
			o.Groups = []web.GroupRole{{Group: "g", Role: web.RoleViewer, Scope: web.Scope{"bad/#"}}}
		}, "groups[0]"},
		{func(o *web.OIDC) { o.RedirectURL = "/cb" }, "redirect_url"},
	} {
		o := good
		c.change(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%+v: %v, want %q", o, err, c.says)
		}
	}
}
