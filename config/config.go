// Package config decodes Calx's YAML config files strictly: an unknown key,
// a wrong type or a bad value is an error naming the file, the line and the
// key, so that a process never starts half-configured. It also gives the
// YAML types that configs share (durations, sizes).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is a config error at a place in a file.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	fmt.Fprintf(&b, ": %s", e.Msg)
	return b.String()
}

var lineRe = regexp.MustCompile(`line (\d+): (.*)`)
var unknownFieldRe = regexp.MustCompile(`field (\S+) not found in type`)

// Load reads file and decodes it strictly into v.
func Load(file string, v any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return Decode(file, b, v)
}

// Decode decodes YAML bytes strictly into v; file names the source in errors.
func Decode(file string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return &Error{File: file, Msg: "file is empty"}
	}
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = file
		return ce
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		var errs []error
		for _, m := range te.Errors {
			errs = append(errs, lineError(file, m))
		}
		return errors.Join(errs...)
	}
	return lineError(file, strings.TrimPrefix(err.Error(), "yaml: "))
}

func lineError(file, msg string) *Error {
	e := &Error{File: file, Msg: msg}
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
	}
	if m := unknownFieldRe.FindStringSubmatch(e.Msg); m != nil {
		e.Key = m[1]
		e.Msg = "unknown key"
	}
	return e
}

// At returns an error for a value at node.
func At(node *yaml.Node, key, format string, args ...any) error {
	return &Error{Line: node.Line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Duration is a time.Duration written as "10s", "5m", "1h30m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return At(n, "", "%q is not a duration such as 500ms, 10s or 5m", n.Value)
	}
	*d = Duration(v)
	return nil
}

// Std returns the time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Size is a byte count written as "512MiB", "10GiB" or a plain number.
type Size int64

var sizeRe = regexp.MustCompile(`^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$`)

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRe.FindStringSubmatch(n.Value)
	if m == nil {
		return At(n, "", "%q is not a size such as 512MiB or 10GiB", n.Value)
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return At(n, "", "%q: %v", n.Value, err)
	}
	mult := map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m[2]]
	*s = Size(v * mult)
	return nil
}

// DecodeNode decodes a YAML node strictly, as Decode does a file; an
// error names the line in the node's file where the node has one.
func DecodeNode(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	// Re-decoding keeps KnownFields strictness; line numbers are relative to
	// the settings block, so report them through the node's own line.
	if err := Decode("settings", b, v); err != nil {
		var ce *Error
		if errors.As(err, &ce) && ce.Line > 0 && n.Line > 0 {
			ce.Line += n.Line - 1
			return fmt.Errorf("line %d: %s: %s", ce.Line, ce.Key, ce.Msg)
		}
		if errors.As(err, &ce) {
			// Settings made from a template have no line of their own.
			return fmt.Errorf("%s: %s", ce.Key, ce.Msg)
		}
		return err
	}
	return nil
}

// DecodeShort decodes a setting written either as one value (its short
// form: an address, say) into *short, or in full, strictly, into v.
func DecodeShort(n *yaml.Node, short *string, v any) error {
	if n.Kind == yaml.ScalarNode {
		*short = n.Value
		return nil
	}
	return DecodeNode(n, v)
}
