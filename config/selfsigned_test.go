package config

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestSelfSigned: the trial's certificates are made once and kept; a
// client that trusts the CA file talks TLS to a listener with the server
// certificate, for localhost and the hosts given, and no other name.
func TestSelfSigned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	srv, caFile, fp, err := SelfSigned(dir, []string{"calx.plant.example", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	again, _, fp2, err := SelfSigned(dir, nil)
	if err != nil || again != srv || fp2 != fp || len(fp) != 64 {
		t.Fatalf("second start: %v %v %q %q", again, err, fp, fp2)
	}
	if st, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", st, err)
	}
	cfg, err := srv.Load()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	pem, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file without a certificate")
	}
	handshake := func(name string) error {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: name}).Handshake()
	}
	for _, name := range []string{"localhost", "calx.plant.example", "10.1.2.3"} {
		if err := handshake(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if handshake("evil.example") == nil {
		t.Error("the certificate is good for a name it was not made for")
	}
}
