package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/guard"
	"github.com/calx-iiot/calx/internal/testcert"
)

type siteClient struct {
	id, user, pw string
	will         string // topic of a Will, if any
	tls          *tls.Config
}

func dialSite(t *testing.T, url string, c siteClient) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(c.id).SetUsername(c.user).SetPassword(c.pw).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	if c.will != "" {
		o.SetWill(c.will, "gone", 0, true)
	}
	if c.tls != nil {
		o.SetTLSConfig(c.tls)
	}
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errors.New("no answer")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { cl.Disconnect(10) })
	}
	return cl, tok.Error()
}

func startSite(t *testing.T, opts LocalBrokerOptions) *LocalBroker {
	t.Helper()
	opts.Listen, opts.Logger = "127.0.0.1:0", discardLogger()
	lb, err := NewLocalBroker(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Shutdown(context.Background()) })
	return lb
}

// The site broker takes no anonymous client unless told to; a Will
// passes the same check as a publish; its limits are the cloud's.
func TestSiteBrokerAccess(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	users := []LocalUser{{Username: "hmi", PasswordHash: string(h), Role: LocalReader}, {Username: "plc", PasswordHash: string(h), Role: LocalDevice}}

	closed := startSite(t, LocalBrokerOptions{})
	if _, err := dialSite(t, "tcp://"+closed.Addr(), siteClient{id: "anon"}); err == nil {
		t.Fatal("anonymous client accepted by default")
	}

	open := startSite(t, LocalBrokerOptions{AllowAnonymous: true, Users: users})
	url := "tcp://" + open.Addr()
	if _, err := dialSite(t, url, siteClient{id: "anon"}); err != nil {
		t.Fatalf("anonymous client with allow_anonymous: %v", err)
	}
	for _, c := range []siteClient{
		{id: "anon-will", will: "uns/ent/site/area/line/m1/temp"},
		{id: "hmi-will", user: "hmi", pw: "pw", will: "site/hmi/status"},
		{id: "plc-will", user: "plc", pw: "pw", will: "uns/ent/site/area/line/m1/temp"},
		{id: "stranger", user: "nobody", pw: "pw"},
		{id: "wrong", user: "plc", pw: "nope"},
	} {
		if _, err := dialSite(t, url, c); err == nil {
			t.Errorf("%s: accepted", c.id)
		}
	}
	if _, err := dialSite(t, url, siteClient{id: "plc", user: "plc", pw: "pw", will: "site/plc/status"}); err != nil {
		t.Fatalf("a device with a Will outside uns/: %v", err)
	}

	// Limits: the clients' retained topics are capped.
	capped := startSite(t, LocalBrokerOptions{Users: users, Limits: guard.Limits{MaxRetained: 2}})
	plc, err := dialSite(t, "tcp://"+capped.Addr(), siteClient{id: "plc", user: "plc", pw: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"site/a", "site/b", "site/c"} {
		plc.Publish(topic, 1, true, "v").WaitTimeout(5 * time.Second)
	}
	if st := capped.limits.Stats(); st.Retained != 2 || st.RetainRefused != 1 {
		t.Fatalf("retained cap: %+v", st)
	}
}

// With TLS the site broker speaks TLS 1.2 or newer only.
func TestSiteBrokerTLS(t *testing.T) {
	cert := testcert.New(t)
	tc, err := config.TLS{CertFile: cert.CertFile, KeyFile: cert.KeyFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	lb := startSite(t, LocalBrokerOptions{TLS: tc, Users: []LocalUser{{Username: "hmi", PasswordHash: string(h), Role: LocalReader}}})
	url := "ssl://" + lb.Addr()
	if _, err := dialSite(t, url, siteClient{id: "ok", user: "hmi", pw: "pw", tls: &tls.Config{RootCAs: cert.Pool}}); err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	old := &tls.Config{RootCAs: cert.Pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	if _, err := dialSite(t, url, siteClient{id: "old", user: "hmi", pw: "pw", tls: old}); err == nil {
		t.Fatal("a TLS 1.1 client was accepted")
	}
	if _, err := dialSite(t, "tcp://"+lb.Addr(), siteClient{id: "plain", user: "hmi", pw: "pw"}); err == nil {
		t.Fatal("a plain TCP client was accepted on the TLS listener")
	}
}
