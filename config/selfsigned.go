package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SelfSigned gives a trial its own certificates: a CA and a server
// certificate it signs, for hosts (names and addresses) and localhost,
// kept in dir (made on first use, used again after). It returns the
// server's TLS files, the CA file to hand to clients (edges' ca_file,
// browsers), and the CA's SHA-256 fingerprint to check it by.
func SelfSigned(dir string, hosts []string) (server TLS, caFile, fingerprint string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLS{}, "", "", fmt.Errorf("self-signed TLS: %w", err)
	}
	caFile, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	server = TLS{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key")}
	ca, key, err := loadPair(caFile, caKey)
	if errors.Is(err, os.ErrNotExist) {
		ca, key, err = newCert(caFile, caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "Calx trial CA"}, IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, 10*365*24*time.Hour, nil, nil)
	}
	if err != nil {
		return TLS{}, "", "", fmt.Errorf("self-signed TLS: CA: %w", err)
	}
	if _, _, err := loadPair(server.CertFile, server.KeyFile); errors.Is(err, os.ErrNotExist) {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "Calx"}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if h != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		if _, _, err := newCert(server.CertFile, server.KeyFile, tmpl, 397*24*time.Hour, ca, key); err != nil {
			return TLS{}, "", "", fmt.Errorf("self-signed TLS: server: %w", err)
		}
	} else if err != nil {
		return TLS{}, "", "", fmt.Errorf("self-signed TLS: server: %w", err)
	}
	sum := sha256.Sum256(ca.Raw)
	return server, caFile, strings.ToUpper(hex.EncodeToString(sum[:])), nil
}

// loadPair reads a PEM certificate and its EC key.
func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, nil, fmt.Errorf("%s or %s: not PEM", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := x509.ParseECPrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	return cert, key, nil
}

// newCert makes tmpl's certificate valid for life, signed by parent (or
// itself), and writes it and its new key.
func newCert(certFile, keyFile string, tmpl *x509.Certificate, life time.Duration, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(life)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}
