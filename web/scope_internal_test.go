package web

import (
	"slices"
	"testing"
)

func TestScopeCoversAndWithin(t *testing.T) {
	ghent := Scope{"limeworks/ghent", "limeworks/namur/lab"}
	for _, c := range []struct {
		p    string
		want bool
	}{
		{"limeworks/ghent", true},
		{"limeworks/ghent/kilns/line1/kiln1/o2", true},
		{"limeworks/ghent2/kilns", false}, // a sibling that shares the letters
		{"limeworks/namur/lab/x", true},
		{"limeworks/namur/kilns", false},
		{"limeworks", false},
		{"", false},
	} {
		if got := ghent.Covers(c.p); got != c.want {
			t.Errorf("Covers(%q) = %v", c.p, got)
		}
		if !(Scope{}).Covers(c.p) {
			t.Errorf("the empty scope does not cover %q", c.p)
		}
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"limeworks/ghent", "limeworks/namur/lab"}},
		{"limeworks", []string{"limeworks/ghent", "limeworks/namur/lab"}},
		{"limeworks/namur", []string{"limeworks/namur/lab"}},
		{"limeworks/ghent/kilns", []string{"limeworks/ghent/kilns"}},
		{"limeworks/lyon", nil},
		{"limeworks/ghent2", nil},
	} {
		if got := ghent.Within(c.prefix); !slices.Equal(got, c.want) {
			t.Errorf("Within(%q) = %v, want %v", c.prefix, got, c.want)
		}
	}
	nested := Scope{"limeworks/ghent", "limeworks/ghent/kilns", "limeworks/ghent"}
	if got := nested.Within(""); !slices.Equal(got, []string{"limeworks/ghent"}) {
		t.Errorf("nested scope entries read twice: %v", got)
	}
	if got := (Scope{}).Within(""); !slices.Equal(got, []string{""}) {
		t.Errorf("the empty scope's Within(\"\") = %v", got)
	}
	if ValidateScope(Scope{"limeworks/+"}) == nil || ValidateScope(Scope{""}) == nil {
		t.Error("a wildcard or an empty prefix is a valid scope")
	}
}
