package store

import (
	"context"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, s := range []string{"plain", "a.b", "x*y>z", "with space", "100%", "", "ünï", "tab\tnl\n", "a=b", "edge@group", "a/b"} {
		tok := Token(s)
		for _, c := range []byte(tok) {
			if needsEscape(c) && c != '=' {
				t.Fatalf("Token(%q) = %q holds %q", s, tok, c)
			}
		}
		if back := Untoken(tok); back != s {
			t.Errorf("Untoken(Token(%q)) = %q", s, back)
		}
	}
}

// TestBusKeepsMessagesAcrossRestart publishes, stops the backbone, starts it
// on the same dir and reads the message back.
func TestBusKeepsMessagesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b, err := NewBus(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if b.ClientURL() != "" {
		t.Error("bus listens without being asked to")
	}
	if _, err := b.JetStream().Publish(ctx, SubjectUNS+".g.e", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	b.Shutdown()
	b.Shutdown() // safe twice

	b2, _ := NewBus(Options{Dir: dir})
	if err := b2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Shutdown)
	m, err := b2.JetStream().Stream(ctx, StreamUNS)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if string(raw.Data) != "hello" {
		t.Fatalf("after restart: %q", raw.Data)
	}
}
