// Package release signs and checks Calx builds, and installs them on an
// edge: a build is a binary for one OS and architecture with a manifest
// (version, platform, SHA-256, size, notes) signed with ed25519 by a key
// kept offline. The cloud and every edge hold the public key only; an edge
// installs nothing whose manifest the key it pins did not sign, and nothing
// whose bytes do not match the manifest.
package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Key text prefixes: a public key is written "calx-release-ed25519:<base64>",
// a private key "calx-release-ed25519-private:<base64 of its seed>".
const (
	publicPrefix  = "calx-release-ed25519:"
	privatePrefix = "calx-release-ed25519-private:"
)

// Errors a check returns; each is wrapped with what was found.
var (
	// ErrTampered: the bytes are not those the manifest describes.
	ErrTampered = errors.New("release: the binary does not match its manifest")
	// ErrSignature: the manifest's signature is not the pinned key's.
	ErrSignature = errors.New("release: signature not valid for this key")
	// ErrManifest: a manifest field is missing or malformed.
	ErrManifest = errors.New("release: bad manifest")
)

// Manifest describes one build of a release and carries its signature.
type Manifest struct {
	Version string `json:"version"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	SHA256  string `json:"sha256"` // hex
	Size    int64  `json:"size"`
	Notes   string `json:"notes,omitempty"`
	// KeyID names the key that signed it (KeyID of its public key): a
	// check that fails can say which key it expected and which signed.
	KeyID string `json:"key_id"`
	// Signature is the base64 ed25519 signature of the signed text.
	Signature string `json:"signature"`
}

// Platform is "os/arch".
func (m Manifest) Platform() string { return m.OS + "/" + m.Arch }

var (
	versionRe  = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$`)
	platformRe = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
	sha256Re   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidVersion checks a release version: letters, digits and . _ -,
// up to 64 characters, starting with a letter or a digit.
func ValidVersion(v string) error {
	if !versionRe.MatchString(v) {
		return fmt.Errorf("%w: version %q: letters, digits and . _ - only, up to 64", ErrManifest, v)
	}
	return nil
}

// Validate checks the fields a signature covers.
func (m Manifest) Validate() error {
	var errs []error
	if err := ValidVersion(m.Version); err != nil {
		errs = append(errs, err)
	}
	if !platformRe.MatchString(m.OS) || !platformRe.MatchString(m.Arch) {
		errs = append(errs, fmt.Errorf("%w: platform %q", ErrManifest, m.Platform()))
	}
	if !sha256Re.MatchString(m.SHA256) {
		errs = append(errs, fmt.Errorf("%w: sha256 %q: 64 lower-case hex digits", ErrManifest, m.SHA256))
	}
	if m.Size <= 0 {
		errs = append(errs, fmt.Errorf("%w: size %d", ErrManifest, m.Size))
	}
	return errors.Join(errs...)
}

// signed is the text a signature covers: every field but the signature.
func (m Manifest) signed() []byte {
	return fmt.Appendf(nil, "calx release v1\nversion=%s\nplatform=%s\nsha256=%s\nsize=%d\nkey=%s\nnotes=%s\n",
		m.Version, m.Platform(), m.SHA256, m.Size, m.KeyID, base64.StdEncoding.EncodeToString([]byte(m.Notes)))
}

// Keygen makes a signing key pair.
func Keygen() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// KeyID is a short name of a public key: the first 8 bytes of its SHA-256,
// in hex.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// FormatPublicKey writes a public key as one line of text.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return publicPrefix + base64.StdEncoding.EncodeToString(pub)
}

// FormatPrivateKey writes a private key as one line of text.
func FormatPrivateKey(priv ed25519.PrivateKey) string {
	return privatePrefix + base64.StdEncoding.EncodeToString(priv.Seed())
}

// ParsePublicKey reads FormatPublicKey's text.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), publicPrefix)
	if !ok {
		return nil, fmt.Errorf("release: public key: want %q followed by base64", publicPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("release: public key: %d bytes of base64 wanted", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// ParsePrivateKey reads FormatPrivateKey's text.
func ParsePrivateKey(s string) (ed25519.PrivateKey, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), privatePrefix)
	if !ok {
		return nil, fmt.Errorf("release: private key: want %q followed by base64", privatePrefix)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.SeedSize {
		return nil, fmt.Errorf("release: private key: %d bytes of base64 wanted", ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(b), nil
}

// Describe returns the SHA-256 (hex) and size of a file.
func Describe(file string) (string, int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", 0, fmt.Errorf("release: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("release: %s: %w", file, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Sign fills m's key id and signature; m's other fields must be set.
func Sign(priv ed25519.PrivateKey, m *Manifest) error {
	m.KeyID = KeyID(priv.Public().(ed25519.PublicKey))
	if err := m.Validate(); err != nil {
		return err
	}
	m.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, m.signed()))
	return nil
}

// Verify checks that pub signed m.
func Verify(pub ed25519.PublicKey, m Manifest) error {
	if err := m.Validate(); err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: the signature is not %d bytes of base64", ErrSignature, ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, m.signed(), sig) {
		if m.KeyID != KeyID(pub) {
			return fmt.Errorf("%w: signed by key %s, the trusted key is %s", ErrSignature, m.KeyID, KeyID(pub))
		}
		return fmt.Errorf("%w: the manifest was changed after it was signed, or the signature is forged", ErrSignature)
	}
	return nil
}

// Check verifies a downloaded file against a manifest: its size, its
// SHA-256 and the manifest's signature by pub.
func Check(pub ed25519.PublicKey, m Manifest, file string) error {
	if err := Verify(pub, m); err != nil {
		return err
	}
	sum, size, err := Describe(file)
	if err != nil {
		return err
	}
	if size != m.Size {
		return fmt.Errorf("%w: %d bytes, the manifest says %d", ErrTampered, size, m.Size)
	}
	if sum != m.SHA256 {
		return fmt.Errorf("%w: SHA-256 %s, the manifest says %s", ErrTampered, sum, m.SHA256)
	}
	return nil
}

// PublicKeyYAML is a public key in a config file (updates.public_key),
// checked as it is read.
type PublicKeyYAML struct{ Key ed25519.PublicKey }

// UnmarshalYAML reads FormatPublicKey's text.
func (k *PublicKeyYAML) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	key, err := ParsePublicKey(s)
	if err != nil {
		return fmt.Errorf("line %d: public_key: %w", n.Line, err)
	}
	k.Key = key
	return nil
}

// VersionOf is the release version in a version string a Calx binary
// reports: "1.4.2 (3f2a9c1d0b7e)" is 1.4.2.
func VersionOf(s string) string {
	v, _, _ := strings.Cut(s, " (")
	return v
}
