package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/transform"
)

// The cloud's jobs in a cluster. Every node runs the broker, the primary
// host's reading of the backbone (births, aliases, the live state), the
// archiver into its own historian, the live feed and the fleet health.
// What acts on the plant or keeps state for the whole cluster runs on one
// node at a time, taken through the backbone (store.Jobs):
//
//   - JobHost: the primary host's voice: its STATE online and the rebirth
//     requests it sends by itself. The node that takes it says STATE
//     online with a timestamp later than the last one, on every node's
//     broker; it never says offline when it hands over, so that edges stay
//     where they are while another node takes over.
//   - JobTransforms: the calculated tags, cycles and alarms. The node that
//     takes it restores their state from the backbone and reads the UNS
//     stream on from where it was saved; what it journals goes to every
//     node's historian and live views (subjectEvents); the others ask it
//     for the alarm list and pass it operators' actions.
//
// A node that loses the quorum tells the edges on its broker that the host
// is offline there (they move to a node that has it), and puts the
// backbone's STATE back when the quorum returns.

// The jobs run once in a cluster.
const (
	JobHost       = "primary-host"
	JobTransforms = "transforms"
)

// subjectTransformCalls is where the node running the transforms answers
// the others.
const subjectTransformCalls = "calx.jobs.transforms"

// subjectForget carries an edge node revoked on one node (group/edge) to
// the others' hosts.
const subjectForget = "calx.host.forget"

// followForgets makes this node's host forget the edge nodes revoked on
// any node, until the subscription ends.
func (c *Cloud) followForgets() (*nats.Subscription, error) {
	return c.Bus.Conn().Subscribe(subjectForget, func(m *nats.Msg) {
		c.Host.mu.Lock()
		delete(c.Host.nodes, string(m.Data))
		c.Host.mu.Unlock()
		c.log.Info("edge node forgotten: revoked on another node", "node", string(m.Data))
	})
}

// ErrNoTransforms: no node runs the transforms now (one takes them within
// seconds of losing the last), or it did not answer.
var ErrNoTransforms = errors.New("the transforms are not running on any node reachable now; try again in a few seconds")

// job is a job this node takes whenever it can, until stopped.
type job struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// goJob runs run on a goroutine of its own until the job is stopped.
func goJob(run func(ctx context.Context)) *job {
	ctx, cancel := context.WithCancel(context.Background())
	j := &job{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(j.done)
		run(ctx)
	}()
	return j
}

// runJob takes the cluster's job name whenever it can and runs it there.
func (c *Cloud) runJob(name string, run func(ctx context.Context)) *job {
	return goJob(func(ctx context.Context) { c.jobs.Run(ctx, name, run) })
}

func (j *job) stop() {
	if j != nil {
		j.cancel()
		<-j.done
	}
}

// Jobs maps each job of the cluster to the node that runs it.
func (c *Cloud) Jobs(ctx context.Context) (map[string]string, error) {
	if c.jobs == nil {
		node := c.Bus.Node()
		out := map[string]string{JobHost: node}
		if c.transform.Load() != nil {
			out[JobTransforms] = node
		}
		return out, nil
	}
	return c.jobs.Holders(ctx, JobHost, JobTransforms)
}

// transformsTerm runs the transforms while this node holds their job.
func (c *Cloud) transformsTerm(js jetstream.JetStream) func(ctx context.Context) {
	return func(ctx context.Context) {
		t := newTransformer(js, c.Fleet, c.Registry, c.Historian, c.publisher(), c.Hub, c.log)
		t.events, t.holds = c.sendEvents(js), func() bool { return c.jobs.Holds(JobTransforms) }
		if err := t.start(ctx); err != nil {
			c.log.Error("transforms not started on this node; trying again", "err", err)
			select { // before the job is taken again
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			return
		}
		c.transform.Store(t)
		sub, err := c.Bus.Conn().Subscribe(subjectTransformCalls, func(m *nats.Msg) { c.answerTransforms(t, m) })
		if err != nil {
			c.log.Error("transforms do not answer the other nodes", "err", err)
		}
		<-ctx.Done()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		c.transform.Store(nil)
		t.stop()
	}
}

// transformCall is a node's call to the one running the transforms.
type transformCall struct {
	Op      string    `json:"op"` // alarms, ack, shelve
	Path    string    `json:"path,omitempty"`
	Until   time.Time `json:"until,omitzero"`
	User    string    `json:"user,omitempty"`
	Comment string    `json:"comment,omitempty"`
}

// transformAnswer is its answer: the result, or an error with its kind.
type transformAnswer struct {
	Result  json.RawMessage `json:"result,omitempty"`
	Error   string          `json:"error,omitempty"`
	NoAlarm bool            `json:"no_alarm,omitempty"`
	// Acted: the action was journaled (an error came after).
	Acted bool `json:"acted,omitempty"`
}

func (c *Cloud) answerTransforms(t *transformer, m *nats.Msg) {
	var call transformCall
	var ans transformAnswer
	var res any
	err := json.Unmarshal(m.Data, &call)
	if err == nil {
		switch call.Op {
		case "alarms":
			res = t.Alarms()
		case "ack", "shelve":
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var tr transform.Transition
			tr, err = c.actLocal(ctx, t, call)
			cancel()
			res, ans.Acted = tr, tr.Alarm != ""
		default:
			err = fmt.Errorf("unknown call %q", call.Op)
		}
	}
	if err != nil {
		ans.Error, ans.NoAlarm = err.Error(), errors.Is(err, transform.ErrNoAlarm)
	}
	if ans.Result, err = json.Marshal(res); err != nil {
		ans.Error = err.Error()
	}
	b, _ := json.Marshal(ans)
	if err := m.Respond(b); err != nil {
		c.log.Warn("transforms' answer not sent", "err", err)
	}
}

// askTransforms calls the node running the transforms and decodes its
// result into out.
func (c *Cloud) askTransforms(ctx context.Context, call transformCall, out any) error {
	b, _ := json.Marshal(call)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second) // longer than the action there
		defer cancel()
	}
	m, err := c.Bus.Conn().RequestWithContext(ctx, subjectTransformCalls, b)
	if err != nil {
		return fmt.Errorf("%w (%w)", ErrNoTransforms, err)
	}
	var ans transformAnswer
	if err := json.Unmarshal(m.Data, &ans); err != nil {
		return fmt.Errorf("transforms' answer: %w", err)
	}
	if ans.Result != nil {
		if err := json.Unmarshal(ans.Result, out); err != nil {
			return fmt.Errorf("transforms' answer: %w", err)
		}
	}
	switch {
	case ans.NoAlarm:
		return fmt.Errorf("%w: %s", transform.ErrNoAlarm, strings.TrimPrefix(ans.Error, transform.ErrNoAlarm.Error()+": "))
	case ans.Error != "":
		return errors.New(ans.Error)
	}
	return nil
}

// transformEvents are what the transforms journal: finished cycles and
// alarm transitions.
type transformEvents struct {
	Node        string                 `json:"node"`
	Cycles      []transform.Cycle      `json:"cycles,omitempty"`
	Transitions []transform.Transition `json:"transitions,omitempty"`
}

func (e transformEvents) empty() bool { return len(e.Cycles) == 0 && len(e.Transitions) == 0 }

// sendEvents puts what the transforms journal in the UNS stream, for the
// other nodes' historians (the archiver) and live views (the hub); id
// makes a repeat stored once. It tries until stored or ctx ends.
func (c *Cloud) sendEvents(js jetstream.JetStream) func(ctx context.Context, id string, ev transformEvents) error {
	node := c.Bus.Node()
	return func(ctx context.Context, id string, ev transformEvents) error {
		ev.Node = node
		b, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("transform events: %w", err)
		}
		if !store.PublishUntilStored(ctx, js, subjectEvents, b, id, c.log) {
			return ctx.Err()
		}
		return nil
	}
}

// hostTerm is the primary host's voice while this node holds its job:
// STATE online, later than any before, on every node's broker; and the
// host's own rebirth requests (Host.acting).
func (c *Cloud) hostTerm(ctx context.Context) {
	if err := c.Host.publishStateAfter(c.stateTimestamp()); err != nil {
		c.log.Error("STATE online not published; the job is given up", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return
	}
	c.log.Info("primary host's job taken: STATE online", "host_id", c.opts.HostID, "node", c.Bus.Node())
	<-ctx.Done()
}

// bucketNodes keeps what each node says of itself, for nodeEvery.
const (
	bucketNodes = "CALX_NODES"
	nodeEvery   = 2 * time.Second
)

// NodeDetails is what a node of a cluster says of itself.
type NodeDetails struct {
	Version string    `json:"version"`
	MQTT    string    `json:"mqtt"` // its broker's address
	Started time.Time `json:"started"`
}

func (c *Cloud) details() NodeDetails {
	return NodeDetails{Version: c.opts.Version, MQTT: c.Broker.Addr(), Started: c.started}
}

// NodeDetails maps each node that spoke in the last seconds to what it
// said; alone, this node.
func (c *Cloud) NodeDetails(ctx context.Context) (map[string]NodeDetails, error) {
	if c.nodesKV == nil {
		return map[string]NodeDetails{c.Bus.Node(): c.details()}, nil
	}
	// Each node's key, read from any copy of the bucket (not a listing,
	// which waits for the bucket's leader).
	out := map[string]NodeDetails{}
	for _, n := range c.Bus.Nodes() {
		var d NodeDetails
		if e, err := c.nodesKV.Get(ctx, store.Token(n.Name)); err == nil && json.Unmarshal(e.Value(), &d) == nil {
			out[n.Name] = d
		}
	}
	return out, nil
}

// watchQuorum tells the edges on this node's broker that the host is
// offline while the node is without the quorum, and puts the backbone's
// STATE back when it returns; every nodeEvery it says what the node is
// (bucketNodes).
func (c *Cloud) watchQuorum(ctx context.Context) {
	topic := c.Host.stateTopic()
	had := true
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var said time.Time
	lost := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(said) >= nodeEvery {
			said = time.Now()
			b, _ := json.Marshal(c.details())
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			if _, err := c.nodesKV.Put(pctx, store.Token(c.Bus.Node()), b); err != nil && c.Bus.Quorum() {
				c.log.Debug("node details not kept", "err", err)
			}
			cancel()
		}
		// A lost quorum counts after three samples in a row: a moment
		// without a metadata leader (an election) is no loss.
		if c.Bus.Quorum() {
			lost = 0
		} else {
			lost++
		}
		has := lost < 3
		if has == had {
			continue
		}
		had = has
		if has {
			c.log.Info("quorum back: the host's STATE is the backbone's again on this node's broker")
			c.bridge.restoreRetained(topic)
			continue
		}
		b, _ := json.Marshal(map[string]any{"online": false, "timestamp": c.stateTimestamp()})
		c.log.Warn("quorum lost: telling this node's edges the host is offline here")
		if err := c.Broker.Publish(topic, b, true, 1); err != nil {
			c.log.Warn("STATE offline not published", "err", err)
		}
	}
}

// stateTimestamp is the timestamp of the host's STATE the backbone keeps
// (0 for none).
func (c *Cloud) stateTimestamp() uint64 {
	var st struct {
		Timestamp uint64 `json:"timestamp"`
	}
	_ = json.Unmarshal(c.bridge.lastRetained(c.Host.stateTopic()), &st)
	return st.Timestamp
}

// decodeEvents reads a subjectEvents message.
func decodeEvents(data []byte) (transformEvents, error) {
	var ev transformEvents
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("transform events: %w", err)
	}
	return ev, nil
}
