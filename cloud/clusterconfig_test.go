package cloud

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calx-iiot/calx/internal/testcert"
)

// TestClusterConfig: a cluster needs its secret from a file, and its
// routes stay on loopback addresses unless they speak TLS.
func TestClusterConfig(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("a-secret-of-the-cluster\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("short\n"), 0o600)
	good := ClusterConfig{Name: "calx", Node: "n1", Listen: "127.0.0.1:6222", Routes: []string{"127.0.0.1:6223", "localhost:6224"}, SecretFile: secret}
	sc, err := good.Store()
	if err != nil || sc.Secret != "a-secret-of-the-cluster" || sc.Replicas() != 3 {
		t.Fatalf("a good cluster: %+v %v", sc, err)
	}
	cert := testcert.New(t)
	off := good
	off.Listen, off.Routes = "10.1.2.3:6222", []string{"calx-2.example.net:6222"}
	off.TLS = &ClusterTLS{CertFile: cert.CertFile, KeyFile: cert.KeyFile, CAFile: cert.CertFile}
	if sc, err := off.Store(); err != nil || sc.TLS == nil || sc.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("routes off this machine over TLS: %+v %v", sc, err)
	}
	if sc, err := (*ClusterConfig)(nil).Store(); sc != nil || err != nil {
		t.Fatalf("no cluster: %v %v", sc, err)
	}
	for _, c := range []struct {
		mod  func(*ClusterConfig)
		want string
	}{
		{func(c *ClusterConfig) { c.SecretFile = "" }, "secret_file: required"},
		{func(c *ClusterConfig) { c.SecretFile = filepath.Join(dir, "none") }, "secret_file"},
		{func(c *ClusterConfig) { c.SecretFile = short }, "secret: at least 16"},
		{func(c *ClusterConfig) { c.Listen = "10.1.2.3:6222" }, "10.1.2.3:6222: routes off this machine need tls"},
		{func(c *ClusterConfig) { c.Routes = []string{"calx-2.example.net:6222"} }, "calx-2.example.net:6222: routes off this machine need tls"},
		{func(c *ClusterConfig) { c.TLS = &ClusterTLS{CertFile: secret} }, "tls: cert_file, key_file and ca_file are all required"},
		{func(c *ClusterConfig) { c.TLS = &ClusterTLS{CertFile: secret, KeyFile: secret, CAFile: secret} }, "tls: tls:"},
		{func(c *ClusterConfig) { c.Node = "" }, "node: required"},
	} {
		cc := good
		c.mod(&cc)
		if _, err := cc.Store(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", cc, err, c.want)
		}
	}
}
