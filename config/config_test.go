package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name  string   `yaml:"name"`
	Every Duration `yaml:"every"`
	Max   Size     `yaml:"max"`
	Inner struct {
		Port int `yaml:"port"`
	} `yaml:"inner"`
}

func TestDecode(t *testing.T) {
	var s sample
	err := Decode("a.yaml", []byte("name: x\nevery: 90s\nmax: 10GiB\ninner:\n  port: 5\n"), &s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Every.Std() != 90*time.Second || s.Max != 10<<30 || s.Inner.Port != 5 {
		t.Fatalf("decoded %+v", s)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		line       int
		key, msg   string
	}{
		{"unknown key", "name: x\ninner:\n  prot: 5\n", 3, "prot", "unknown key"},
		{"bad duration", "every: fortnight\n", 1, "", "duration"},
		{"negative duration", "every: -1s\n", 1, "", "duration"},
		{"bad size", "name: a\nmax: lots\n", 2, "", "size"},
		{"wrong type", "inner:\n  port: many\n", 2, "", "cannot unmarshal"},
		{"syntax", "name: [\n", 0, "", ""},
		{"empty", "", 0, "", "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			err := Decode("conf.yaml", []byte(tc.body), &s)
			if err == nil {
				t.Fatal("no error")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a config.Error", err, err)
			}
			if ce.File != "conf.yaml" || (tc.line > 0 && ce.Line != tc.line) || ce.Key != tc.key || !strings.Contains(ce.Msg, tc.msg) {
				t.Fatalf("got %+v (%v), want line %d key %q msg ~%q", *ce, err, tc.line, tc.key, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "conf.yaml") {
				t.Fatalf("error %q does not start with the file", err)
			}
		})
	}
}
