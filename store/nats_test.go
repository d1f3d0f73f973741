package store

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/internal/testcert"
)

func hashed(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func startPort(t *testing.T, tc *tls.Config, users ...NATSUser) *Bus {
	t.Helper()
	b, err := NewBus(Options{Dir: t.TempDir(), Listen: "127.0.0.1:0", Users: users, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	return b
}

// The backbone's NATS port is never open without authentication; a user
// does only what its subjects allow (by default: read the UNS batches);
// the process's own account cannot be used from the network.
func TestNATSPortAuth(t *testing.T) {
	if _, err := NewBus(Options{Dir: t.TempDir(), Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "needs users") {
		t.Fatalf("a port without users: %v", err)
	}
	if _, err := NewBus(Options{Dir: t.TempDir(), Listen: "127.0.0.1:0", Users: []NATSUser{{Username: "x", PasswordHash: "plain"}}}); err == nil {
		t.Fatal("a plain-text password accepted")
	}
	b := startPort(t, nil, NATSUser{Username: "reader", PasswordHash: hashed(t, "rpw")},
		NATSUser{Username: "ops", PasswordHash: hashed(t, "opw"), Publish: []string{"$JS.API.>"}, Subscribe: []string{"_INBOX.>"}})
	url := b.ClientURL()
	for name, opts := range map[string][]nats.Option{
		"anonymous":      nil,
		"wrong password": {nats.UserInfo("reader", "nope")},
		"unknown user":   {nats.UserInfo("nobody", "rpw")},
		"internal":       {nats.UserInfo(internalUser, b.internal)},
	} {
		if nc, err := nats.Connect(url, append(opts, nats.NoReconnect(), nats.Timeout(3*time.Second))...); err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		}
	}

	denied := make(chan error, 10)
	reader, err := nats.Connect(url, nats.UserInfo("reader", "rpw"), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	got := make(chan string, 1)
	if _, err := reader.Subscribe(SubjectUNS+".>", func(m *nats.Msg) { got <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	if err := reader.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream().Publish(context.Background(), SubjectUNS+".g.e", []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != SubjectUNS+".g.e" {
			t.Fatalf("got %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader got no UNS batch")
	}
	// Everything else is refused: another stream's subjects, any publish
	// (a key-value write among them), the JetStream API.
	reader.Subscribe(SubjectSparkplug+".>", func(*nats.Msg) {})
	reader.Publish("$KV.CALX_MQTT_ACCOUNTS.evil", []byte(`{"role":"custom"}`))
	reader.Flush()
	for range 2 {
		select {
		case err := <-denied:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("want a permission violation, got %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no permission violation")
		}
	}
	if js, err := jetstream.New(reader); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := js.Stream(ctx, StreamUNS); err == nil {
			t.Fatal("the reader used the JetStream API")
		}
	}

	// A user granted the JetStream API has it.
	ops, err := nats.Connect(url, nats.UserInfo("ops", "opw"), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	js, _ := jetstream.New(ops)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, StreamUNS); err != nil {
		t.Fatalf("ops: %v", err)
	}
}

// With TLS the port refuses plain clients and TLS before 1.2, while the
// process's own connections go on in process.
func TestNATSPortTLS(t *testing.T) {
	cert := testcert.New(t)
	tc, err := config.TLS{CertFile: cert.CertFile, KeyFile: cert.KeyFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	b := startPort(t, tc, NATSUser{Username: "reader", PasswordHash: hashed(t, "rpw")})
	url := b.ClientURL()
	if nc, err := nats.Connect(url, nats.UserInfo("reader", "rpw"), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a plain client connected")
	}
	old := &tls.Config{RootCAs: cert.Pool, MaxVersion: tls.VersionTLS11}
	if nc, err := nats.Connect(url, nats.UserInfo("reader", "rpw"), nats.Secure(old), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a TLS 1.1 client connected")
	}
	nc, err := nats.Connect(url, nats.UserInfo("reader", "rpw"), nats.Secure(&tls.Config{RootCAs: cert.Pool}), nats.NoReconnect())
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	nc.Close()
	if _, err := b.JetStream().Publish(context.Background(), SubjectUNS+".g.e", []byte("x")); err != nil {
		t.Fatalf("in-process publish: %v", err)
	}
}
