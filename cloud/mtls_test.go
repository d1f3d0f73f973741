package cloud

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/internal/testcert"
)

// TestEdgeClientCertificates: with a client CA on the broker, an edge
// signs in with its certificate and no password; a certificate of edge A
// cannot act as edge B, one of another CA is refused at the handshake,
// and passwords still work beside certificates. A new client CA file
// takes effect without a restart.
func TestEdgeClientCertificates(t *testing.T) {
	srv := testcert.New(t)
	other := testcert.New(t)
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	copyFile(t, srv.CertFile, caFile)
	srvTLS, err := config.TLS{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: caFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	c := startCloudWith(t, Options{MQTT: BrokerOptions{TLS: srvTLS, Users: []MQTTUser{
		{Username: "edge-a", PasswordHash: mustHash(t, "pw-a"), Role: RoleEdge, Group: "g", EdgeID: "a"},
		{Username: "edge-b", PasswordHash: mustHash(t, "pw-b"), Role: RoleEdge, Group: "g", EdgeID: "b"},
	}}})
	connect := func(user, pw string, cert *tls.Certificate) error {
		cfg := &tls.Config{RootCAs: srv.Pool, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		o := paho.NewClientOptions().AddBroker("ssl://" + c.Broker.Addr()).SetClientID(fmt.Sprintf("%s-%d", user, time.Now().UnixNano())).
			SetUsername(user).SetPassword(pw).SetTLSConfig(cfg).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		cl := paho.NewClient(o)
		tok := cl.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return fmt.Errorf("no answer")
		}
		if err := tok.Error(); err != nil {
			return err
		}
		cl.Disconnect(10)
		return nil
	}
	certA := srv.Client(t, "edge-a")
	foreign := other.Client(t, "edge-a")
	for _, tc := range []struct {
		name     string
		user, pw string
		cert     *tls.Certificate
		ok       bool
	}{
		{"edge A's certificate, no password", "edge-a", "", &certA, true},
		{"edge A's certificate used as edge B", "edge-b", "", &certA, false},
		{"edge A's certificate with edge B's password", "edge-b", "pw-b", &certA, false},
		{"a certificate of another CA", "edge-a", "", &foreign, false},
		{"a password, no certificate", "edge-b", "pw-b", nil, true},
		{"no certificate, no password", "edge-a", "", nil, false},
	} {
		if err := connect(tc.user, tc.pw, tc.cert); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}

	// Rotation: the client CA becomes the other one, read at the next
	// handshake.
	copyFile(t, other.CertFile, caFile)
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(caFile, later, later); err != nil {
		t.Fatal(err)
	}
	if err := connect("edge-a", "", &foreign); err != nil {
		t.Errorf("a certificate of the new client CA: %v", err)
	}
	if err := connect("edge-a", "", &certA); err == nil {
		t.Error("a certificate of the old client CA still signs in")
	}
}

// TestCalxEdgeWithClientCertificate: a Calx edge with a client certificate
// and no password is born on a broker that asks for certificates.
func TestCalxEdgeWithClientCertificate(t *testing.T) {
	srv := testcert.New(t)
	srvTLS, err := config.TLS{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: srv.CertFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	c := startCloudWith(t, Options{MQTT: BrokerOptions{TLS: srvTLS, Users: []MQTTUser{
		{Username: "edge-a", PasswordHash: mustHash(t, "pw-a"), Role: RoleEdge, Group: "g", EdgeID: "a"},
	}}})
	certFile, keyFile := srv.ClientFiles(t, "edge-a")
	get, err := config.ClientCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	e := edgetest.Start(t, edge.Options{Broker: "ssl://" + c.Broker.Addr(), Username: "edge-a", Group: "g", EdgeID: "a",
		PrimaryHost: "calx", DataDir: t.TempDir(), TLS: &tls.Config{RootCAs: srv.Pool, GetClientCertificate: get, MinVersion: tls.VersionTLS12}})
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !e.Online() {
			return fmt.Errorf("not born")
		}
		return nil
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEdgePasswordRotates: the cloud gives an edge a new password (its
// session ends); once the edge's password file holds it, the edge signs in
// and is born again, without a restart.
func TestEdgePasswordRotates(t *testing.T) {
	c := startCloudWith(t, Options{MQTT: BrokerOptions{Users: []MQTTUser{
		{Username: "edge-a", PasswordHash: mustHash(t, "pw-a-start"), Role: RoleEdge, Group: "g", EdgeID: "a"},
	}}})
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte("pw-a-start\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := edgetest.Start(t, edge.Options{Broker: "tcp://" + c.Broker.Addr(), Username: "edge-a", Password: "pw-a-start", PasswordFile: pwFile,
		Group: "g", EdgeID: "a", PrimaryHost: "calx", DataDir: t.TempDir(), KeepAlive: 2 * time.Second})
	born := func() time.Time {
		for _, n := range c.Host.Nodes() {
			if n.Edge == "a" && n.Online {
				return n.BirthAt
			}
		}
		return time.Time{}
	}
	var first time.Time
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if first = born(); first.IsZero() || !e.Online() {
			return fmt.Errorf("not born")
		}
		return nil
	})
	pw, err := c.RotateMQTTPassword(context.Background(), "edge-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if b := born(); !b.After(first) {
			return fmt.Errorf("not born again with the new password (online %v)", e.Online())
		}
		return nil
	})
}
