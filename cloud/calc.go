package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/edge/fleet"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// Calculated tags: a durable consumer of the UNS stream evaluates, on every
// new value of an input, the expressions of the newest fleet config's
// calculated tags, and publishes their values back into the UNS stream, so
// they reach the historian, live views and MQTT like any tag. An output is
// BAD when an input is BAD or missing, and historical when the input that
// changed is.

const (
	consumerCalc = "calc"
	// subjectCalc carries calculated values in the UNS stream.
	subjectCalc = store.SubjectUNS + "._calc._calc"
)

type calcDef struct {
	out    uns.Path
	prog   *vm.Program
	inputs map[string]uns.Path // identifier -> tag
	unit   string
}

type calc struct {
	js    jetstream.JetStream
	fleet *Fleet
	reg   *Registry
	tags  TagSink
	log   *slog.Logger

	mu      sync.Mutex
	version uint64
	byInput map[uns.Path][]*calcDef
	latest  map[uns.Path]uns.Sample

	evaluated, failed atomic.Uint64

	cancel context.CancelFunc
	done   chan struct{}
}

func newCalc(js jetstream.JetStream, f *Fleet, reg *Registry, tags TagSink, log *slog.Logger) *calc {
	return &calc{js: js, fleet: f, reg: reg, tags: tags, log: log.With("component", "calc"),
		byInput: map[uns.Path][]*calcDef{}, latest: map[uns.Path]uns.Sample{}, done: make(chan struct{})}
}

// identifiers returns the variables an expression reads.
func identifiers(code string) ([]string, error) {
	tree, err := parser.Parse(code)
	if err != nil {
		return nil, err
	}
	v := &identVisitor{seen: map[string]bool{}, callees: map[ast.Node]bool{}}
	ast.Walk(&tree.Node, v)
	return v.names, nil
}

type identVisitor struct {
	names   []string
	seen    map[string]bool
	callees map[ast.Node]bool
}

func (v *identVisitor) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.CallNode:
		v.callees[x.Callee] = true
	case *ast.IdentifierNode:
		if !v.callees[x] && !v.seen[x.Value] {
			v.seen[x.Value] = true
			v.names = append(v.names, x.Value)
		}
	}
}

// load builds the calculated tags of the newest fleet config when it
// changed.
func (c *calc) load(ctx context.Context) error {
	head, err := c.fleet.Head(ctx)
	if err != nil || head == c.version {
		return err
	}
	cfg, err := c.fleet.parsed(ctx, head)
	if err != nil {
		return err
	}
	byInput := map[uns.Path][]*calcDef{}
	var tags []uns.Tag
	for _, ct := range cfg.CalculatedTags() {
		d, err := compileCalc(ct)
		if err != nil {
			c.log.Error("calculated tag skipped", "tag", ct.Device+"/"+ct.Name, "err", err)
			continue
		}
		for _, p := range d.inputs {
			byInput[p] = append(byInput[p], d)
		}
		tag := uns.Tag{Path: d.out, DataType: uns.TypeFloat64, Unit: ct.Unit, Description: ct.Description}
		tags = append(tags, tag)
		c.reg.Define(tag)
	}
	if c.tags != nil && len(tags) > 0 {
		if err := c.tags.UpsertTags(ctx, tags); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.byInput, c.version = byInput, head
	c.mu.Unlock()
	c.log.Info("calculated tags loaded", "version", head, "tags", len(tags))
	return nil
}

func compileCalc(ct fleet.CalculatedTag) (*calcDef, error) {
	names, err := identifiers(ct.Expr)
	if err != nil {
		return nil, err
	}
	prog, err := expr.Compile(ct.Expr, expr.AllowUndefinedVariables())
	if err != nil {
		return nil, err
	}
	d := &calcDef{out: uns.Path(ct.Device + "/" + ct.Name), prog: prog, inputs: map[string]uns.Path{}, unit: ct.Unit}
	if err := d.out.Validate(); err != nil {
		return nil, err
	}
	for _, n := range names {
		d.inputs[n] = uns.Path(ct.Device + "/" + n)
	}
	return d, nil
}

// eval computes d at the time of s, the sample that changed.
func (c *calc) eval(d *calcDef, s uns.Sample) uns.Sample {
	out := uns.Sample{Path: d.out, TS: s.TS, Historical: s.Historical, Value: uns.Null, Quality: uns.Bad}
	env := map[string]any{}
	q := uns.Good
	for name, p := range d.inputs {
		in, ok := c.latest[p]
		f, num := in.Value.AsFloat()
		if !ok || in.Quality == uns.Bad || !num {
			return out // an input without a good value: no good result
		}
		if in.Quality == uns.Uncertain {
			q = uns.Uncertain
		}
		env[name] = f
	}
	r, err := expr.Run(d.prog, env)
	if err != nil {
		c.failed.Add(1)
		return out
	}
	var f float64
	switch v := r.(type) {
	case float64:
		f = v
	case int:
		f = float64(v)
	case bool:
		if v {
			f = 1
		}
	default:
		c.failed.Add(1)
		return out
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		c.failed.Add(1)
		return out
	}
	c.evaluated.Add(1)
	out.Value, out.Quality = uns.Float(f), q
	return out
}

// process returns the calculated values that the samples bring about.
func (c *calc) process(samples []uns.Sample) []uns.Sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uns.Sample
	for _, s := range samples {
		defs := c.byInput[s.Path]
		if len(defs) == 0 {
			continue
		}
		if !s.Historical {
			c.latest[s.Path] = s
		} else if cur, ok := c.latest[s.Path]; !ok || !s.TS.Before(cur.TS) {
			c.latest[s.Path] = s
		}
		for _, d := range defs {
			out = append(out, c.eval(d, s))
		}
	}
	return out
}

func (c *calc) start(ctx context.Context) error {
	cons, err := store.ResumeConsumer(ctx, c.js, store.StreamUNS, jetstream.ConsumerConfig{
		Durable: consumerCalc, AckPolicy: jetstream.AckAllPolicy, AckWait: time.Minute,
		MaxAckPending: -1, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("calc: consumer: %w", err)
	}
	if err := c.load(ctx); err != nil {
		c.log.Warn("calculated tags not loaded yet", "err", err)
	}
	ctx, c.cancel = context.WithCancel(ctx)
	go func() {
		defer close(c.done)
		c.loop(ctx, cons)
	}()
	return nil
}

func (c *calc) stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

func (c *calc) loop(ctx context.Context, cons jetstream.Consumer) {
	var samples []uns.Sample
	var buf []byte
	lastLoad := time.Now()
	for ctx.Err() == nil {
		if time.Since(lastLoad) > 2*time.Second {
			lastLoad = time.Now()
			if err := c.load(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("calculated tags not reloaded", "err", err)
			}
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		var last jetstream.Msg
		for msg := range batch.Messages() {
			last = msg
			if msg.Subject() == subjectCalc {
				continue
			}
			samples, err = uns.DecodeBatch(samples[:0], msg.Data())
			if err != nil {
				continue
			}
			out := c.process(samples)
			if len(out) == 0 {
				continue
			}
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			buf = uns.AppendBatch(buf[:0], out)
			// The input's stream sequence makes a redelivery idempotent.
			id := "calc-" + strconv.FormatUint(meta.Sequence.Stream, 10)
			for {
				_, err := c.js.Publish(context.WithoutCancel(ctx), subjectCalc, buf, jetstream.WithMsgID(id))
				if err == nil {
					break
				}
				c.log.Warn("calculated values not published, trying again", "err", err)
				select {
				case <-ctx.Done():
					return // not acked: they come again after a restart
				case <-time.After(200 * time.Millisecond):
				}
			}
			c.reg.Update(out)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			c.log.Warn("fetch batch ended with error", "err", err)
		}
		if last != nil {
			_ = last.Ack()
		}
	}
}
