package cloud

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestMatchesUNS(t *testing.T) {
	for f, want := range map[string]bool{
		"uns/#": true, "uns/a/b": true, "+/a/#": true, "#": true, "$share/g/uns/#": true, "$SHARE/g/#": true,
		"unsx/#": false, "spBv1.0/#": false, "$share/g": false, "$share/g/spBv1.0/#": false, "calx/+/x": false,
	} {
		if matchesUNS(f) != want {
			t.Errorf("matchesUNS(%q) = %v", f, !want)
		}
	}
}

// While nobody subscribes to uns/, UNS values are only stored as retained
// messages; a subscriber gets them when it subscribes and every later one
// live; once it is gone, values are only stored again.
func TestRetainGate(t *testing.T) {
	c := startCloud(t)
	b := c.Broker
	b.gate.mu.Lock()
	b.gate.recheck = 50 * time.Millisecond
	b.gate.mu.Unlock()
	pub := func(topic, v string) {
		t.Helper()
		if err := b.PublishRetained(topic, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	pub("uns/a/b", "1")
	if n := b.gate.stored.Load(); n != 1 {
		t.Fatalf("%d values stored without a look for subscribers, want 1", n)
	}
	reader, err := dial(t, c, "reader", "pwr")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	reader.Subscribe("uns/a/#", 0, func(_ paho.Client, m paho.Message) {
		got <- fmt.Sprintf("%s %s retained=%v", m.Topic(), m.Payload(), m.Retained())
	}).WaitTimeout(5 * time.Second)
	expect := func(want string) {
		t.Helper()
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("got %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing received, want %q", want)
		}
	}
	expect("uns/a/b 1 retained=true")
	pub("uns/a/b", "2")
	expect("uns/a/b 2 retained=false")
	if n := b.gate.stored.Load(); n != 1 {
		t.Fatalf("%d values stored without a look for subscribers with one following", n)
	}
	reader.Unsubscribe("uns/a/#").WaitTimeout(5 * time.Second)
	time.Sleep(100 * time.Millisecond)
	pub("uns/a/b", "3")
	if n := b.gate.stored.Load(); n != 2 {
		t.Fatalf("%d values stored without a look for subscribers after the unsubscribe, want 2", n)
	}
	reader.Subscribe("uns/a/#", 0, func(_ paho.Client, m paho.Message) {
		got <- fmt.Sprintf("%s %s retained=%v", m.Topic(), m.Payload(), m.Retained())
	}).WaitTimeout(5 * time.Second)
	expect("uns/a/b 3 retained=true")
}

// A subscriber that arrives while values are being stored ends with the
// newest value, whichever way it came.
func TestRetainGateSubscribeWhilePublishing(t *testing.T) {
	c := startCloud(t)
	b := c.Broker
	b.gate.mu.Lock()
	b.gate.recheck = 0
	b.gate.mu.Unlock()
	const last = 3000
	for round := range 15 {
		topic := fmt.Sprintf("uns/race/r%d", round)
		reader, err := dial(t, c, "reader", "pwr")
		if err != nil {
			t.Fatal(err)
		}
		newest := make(chan int, last+1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for v := 1; v <= last; v++ {
				if err := b.PublishRetained(topic, []byte(strconv.Itoa(v))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		reader.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) {
			v, _ := strconv.Atoi(string(m.Payload()))
			newest <- v
		}).WaitTimeout(5 * time.Second)
		<-done
		seen, deadline := 0, time.After(5*time.Second)
		for seen != last {
			select {
			case v := <-newest:
				seen = v
			case <-deadline:
				t.Fatalf("round %d: the subscriber's newest value is %d, want %d", round, seen, last)
			}
		}
		reader.Disconnect(10)
	}
	if b.gate.stored.Load() == 0 {
		t.Fatal("no value was stored without a look for subscribers: the test did not race")
	}
}
