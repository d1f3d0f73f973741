package main

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/calx-iiot/calx/release"
)

const releaseUsage = `usage:
  calx release keygen --out DIR
  calx release sign --key FILE --binary FILE --version V [--notes TEXT] [--out FILE]
  calx release verify --public-key FILE --manifest FILE --binary FILE
`

// cmdRelease makes signing keys and signs and checks edge builds, offline
// (docs/UPDATES.md).
func cmdRelease(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, releaseUsage)
		return shownError{errUsage}
	}
	switch args[0] {
	case "keygen":
		return releaseKeygen(args[1:], stdout, stderr)
	case "sign":
		return releaseSign(args[1:], stdout, stderr)
	case "verify":
		return releaseVerify(args[1:], stdout, stderr)
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, `Sign edge builds for updates from the cloud, offline: the private key never
goes to the cloud, which holds the public key only, as every edge does.

`+releaseUsage)
		return nil
	}
	fmt.Fprintf(stderr, "calx release: unknown command %q\n%s", args[0], releaseUsage)
	return shownError{errUsage}
}

func releaseKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("release keygen", `Make a release signing key pair: DIR/release.key (private: keep it offline)
and DIR/release.pub (for cloud.yaml's and every edge.yaml's updates.public_key).`, stdout, stderr)
	out := fs.String("out", ".", "directory to write release.key and release.pub in")
	if err := parse(fs, args); err != nil {
		return err
	}
	keyFile, pubFile := filepath.Join(*out, "release.key"), filepath.Join(*out, "release.pub")
	if _, err := os.Stat(keyFile); err == nil {
		return fmt.Errorf("%s exists: not overwritten", keyFile)
	}
	pub, priv, err := release.Keygen()
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, []byte(release.FormatPrivateKey(priv)+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(pubFile, []byte(release.FormatPublicKey(pub)+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "private key: %s (keep it offline)\npublic key:  %s, key id %s\n  %s\n", keyFile, pubFile, release.KeyID(pub), release.FormatPublicKey(pub))
	return nil
}

func releaseSign(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("release sign", `Sign an edge build: writes its manifest (version, platform, SHA-256, size,
notes, signature) as JSON, to upload with the binary (POST /api/v1/releases).
The platform is read from the binary.`, stdout, stderr)
	keyFile := fs.String("key", "release.key", "the private key (calx release keygen)")
	binary := fs.String("binary", "", "the build to sign")
	version := fs.String("version", "", "the release version, e.g. 1.4.2")
	notes := fs.String("notes", "", "release notes")
	out := fs.String("out", "", "manifest file (default <binary>.manifest.json)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *binary == "" || *version == "" {
		return fmt.Errorf("%w: --binary and --version are required", errUsage)
	}
	kb, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	priv, err := release.ParsePrivateKey(string(kb))
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	goos, goarch, err := platformOf(*binary)
	if err != nil {
		return err
	}
	sum, size, err := release.Describe(*binary)
	if err != nil {
		return err
	}
	m := release.Manifest{Version: *version, OS: goos, Arch: goarch, SHA256: sum, Size: size, Notes: *notes}
	if err := release.Sign(priv, &m); err != nil {
		return err
	}
	if *out == "" {
		*out = *binary + ".manifest.json"
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %s %s (%s, %d bytes, sha256 %s) with key %s: %s\n", m.Version, m.Platform(), filepath.Base(*binary), size, sum, m.KeyID, *out)
	return nil
}

func releaseVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("release verify", `Check a build against its manifest and a public key, as an edge does before
it installs it.`, stdout, stderr)
	pubFile := fs.String("public-key", "release.pub", "the public key")
	manifest := fs.String("manifest", "", "the manifest")
	binary := fs.String("binary", "", "the build")
	if err := parse(fs, args); err != nil {
		return err
	}
	pb, err := os.ReadFile(*pubFile)
	if err != nil {
		return err
	}
	pub, err := release.ParsePublicKey(string(pb))
	if err != nil {
		return fmt.Errorf("%s: %w", *pubFile, err)
	}
	mb, err := os.ReadFile(*manifest)
	if err != nil {
		return err
	}
	var m release.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return fmt.Errorf("%s: %w", *manifest, err)
	}
	if err := release.Check(pub, m, *binary); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: release %s for %s, signed by key %s: good\n", *binary, m.Version, m.Platform(), m.KeyID)
	return nil
}

// platformOf reads a binary's OS and architecture from its ELF header.
func platformOf(file string) (string, string, error) {
	f, err := elf.Open(file)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", "", fmt.Errorf("%s: not a Linux (ELF) binary", file)
		}
		return "", "", err
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "linux", "amd64", nil
	case elf.EM_AARCH64:
		return "linux", "arm64", nil
	case elf.EM_ARM:
		return "linux", "arm", nil
	case elf.EM_386:
		return "linux", "386", nil
	case elf.EM_RISCV:
		return "linux", "riscv64", nil
	}
	return "", "", fmt.Errorf("%s: machine %v not supported", file, f.Machine)
}
