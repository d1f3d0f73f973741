package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // OPC UA names certificates by their SHA-1 thumbprint
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The connector's PKI directory holds, like other OPC UA applications':
//
//	own/cert.pem, own/key.pem  the application certificate, made on first use
//	trusted/                   server certificates trusted (DER or PEM, any name)
//	rejected/                  server certificates met and not trusted, by thumbprint
//
// A server whose certificate is not trusted is refused, and its certificate
// is written to rejected/: moving it to trusted/ trusts it.

// appCert is the application instance certificate and its key.
type appCert struct {
	der []byte
	key *rsa.PrivateKey
	uri string // the certificate's application URI
}

// loadAppCert reads the configured certificate, or the one in the PKI
// directory, making it when there is none.
func loadAppCert(certFile, keyFile, pkiDir, device string) (*appCert, error) {
	if certFile == "" {
		if pkiDir == "" {
			return nil, errors.New("security: no application certificate (cert_file, key_file) and no pki_dir to make one in")
		}
		certFile, keyFile = filepath.Join(pkiDir, "own", "cert.pem"), filepath.Join(pkiDir, "own", "key.pem")
		if _, err := os.Stat(certFile); errors.Is(err, os.ErrNotExist) {
			if err := makeAppCert(certFile, keyFile, device); err != nil {
				return nil, fmt.Errorf("application certificate: %w", err)
			}
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("application certificate %s: %w", certFile, err)
	}
	key, ok := pair.PrivateKey.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("application certificate %s: an RSA key is required", keyFile)
	}
	c := &appCert{der: pair.Certificate[0], key: key}
	if x, err := x509.ParseCertificate(c.der); err == nil && len(x.URIs) > 0 {
		c.uri = x.URIs[0].String()
	}
	return c, nil
}

// makeAppCert writes a self-signed application instance certificate for
// the device, as OPC UA Part 6 describes one: RSA 2048, SHA-256, the
// application URI and host name as subject alternative names.
func makeAppCert(certFile, keyFile, device string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	uri, err := url.Parse("urn:calx:edge:" + url.PathEscape(host) + ":" + url.PathEscape(device))
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Calx edge " + device, Organization: []string{"Calx"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment |
			x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              []string{host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// thumbprint is the SHA-1 of a certificate's DER, in hex, as OPC UA tools
// show it.
func thumbprint(der []byte) string {
	sum := sha1.Sum(der) //nolint:gosec
	return hex.EncodeToString(sum[:])
}

// trust decides whether a server certificate is trusted: it is the
// configured server_cert_file, or one of the PKI directory's trusted/. An
// untrusted certificate is written to rejected/ and refused with an error
// that says how to trust it.
func trust(server []byte, serverCertFile, pkiDir string) error {
	if len(server) == 0 {
		return errors.New("the server sent no certificate")
	}
	if serverCertFile != "" {
		b, err := os.ReadFile(serverCertFile)
		if err != nil {
			return fmt.Errorf("server_cert_file: %w", err)
		}
		if bytes.Equal(pemOrDER(b), server) {
			return nil
		}
	}
	if pkiDir != "" {
		trusted := filepath.Join(pkiDir, "trusted")
		entries, _ := os.ReadDir(trusted)
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			if b, err := os.ReadFile(filepath.Join(trusted, e.Name())); err == nil && bytes.Equal(pemOrDER(b), server) {
				return nil
			}
		}
	}
	tp := thumbprint(server)
	subject := ""
	if x, err := x509.ParseCertificate(server); err == nil {
		subject = x.Subject.String()
	}
	if pkiDir == "" {
		return fmt.Errorf("server certificate %q (thumbprint %s) is not trusted: it is not server_cert_file", subject, tp)
	}
	rejected := filepath.Join(pkiDir, "rejected", tp+".der")
	if err := os.MkdirAll(filepath.Dir(rejected), 0o700); err == nil {
		_ = os.WriteFile(rejected, server, 0o644)
	}
	return fmt.Errorf("server certificate %q (thumbprint %s) is not trusted: to trust it, move %s to %s",
		subject, tp, rejected, filepath.Join(pkiDir, "trusted")+string(filepath.Separator))
}
