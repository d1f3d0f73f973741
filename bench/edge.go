package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Credentials are one edge node's MQTT account.
type Credentials struct {
	Username, Password string
}

// counters are what the simulated edges did, summed over all of them.
type counters struct {
	sentValues, sentMsgs   atomic.Int64 // handed to the MQTT client
	ackedValues, ackedMsgs atomic.Int64 // acknowledged by the broker (QoS 1 PUBACK)
	failed                 atomic.Int64 // publishes the broker did not acknowledge
}

// simEdge is a Sparkplug B edge node with one device of n float tags. It
// publishes NBIRTH and DBIRTH, then a DDATA at every tick carrying the tags
// that changed: each tag changes at a tick with probability change.
type simEdge struct {
	group, id string
	fleet     Fleet
	creds     Credentials
	broker    string
	c         *counters

	// acks ends the wait for outstanding acknowledgements.
	acks   context.Context
	client paho.Client
	seq    uint64
	lastMs uint64 // each message a millisecond of its own, as values of a tag need
	values []float64
	rnd    *rand.Rand
}

const benchDevice = "d1"

func (e *simEdge) topic(t sparkplug.MsgType, device string) string {
	return sparkplug.Topic{Group: e.group, Type: t, Edge: e.id, Device: device}.String()
}

func (e *simEdge) nextSeq() uint64 {
	s := e.seq
	e.seq = (e.seq + 1) % 256
	return s
}

// connectAgain connects; in a cluster (several brokers) it tries again a
// while when refused: the other nodes learn a new account within moments
// of the one that made it.
func (e *simEdge) connectAgain(ctx context.Context, cluster bool) error {
	for try := 0; ; try++ {
		err := e.connect(ctx)
		if err == nil || try == 20 || !cluster || !strings.Contains(err.Error(), "not Authorized") {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// connect opens the MQTT connection and sends the births.
func (e *simEdge) connect(ctx context.Context) error {
	death, _ := proto.Marshal(sparkplug.NodeDeath(0, time.Now()))
	co := paho.NewClientOptions().AddBroker(e.broker).SetClientID(e.group+"."+e.id).
		SetUsername(e.creds.Username).SetPassword(e.creds.Password).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(30*time.Second).
		SetConnectTimeout(30*time.Second).SetWriteTimeout(30*time.Second).SetOrderMatters(false).
		SetMaxResumePubInFlight(1000).
		SetBinaryWill(e.topic(sparkplug.NDEATH, ""), death, 1, false)
	e.client = paho.NewClient(co)
	if err := wait(ctx, e.client.Connect()); err != nil {
		return fmt.Errorf("edge %s/%s: connect %s: %w", e.group, e.id, e.broker, err)
	}
	now := sparkplug.Millis(time.Now())
	e.lastMs = now
	at := sparkplug.Timestamp(now)
	nbirth := &pb.Payload{Timestamp: proto.Uint64(now), Seq: proto.Uint64(e.nextSeq()), Metrics: []*pb.Payload_Metric{
		sparkplug.BdSeqMetric(0, now), sparkplug.RebirthMetric(now)}}
	if err := e.publish(e.topic(sparkplug.NBIRTH, ""), nbirth, false); err != nil {
		return err
	}
	dbirth := &pb.Payload{Timestamp: proto.Uint64(now), Seq: proto.Uint64(e.nextSeq())}
	e.values = make([]float64, e.fleet.TagsPerEdge)
	for i := range e.values {
		e.values[i] = float64(i)
		def := sparkplug.TagDef{Name: fmt.Sprintf("t%04d", i), Alias: uint64(i + 1), DataType: uns.TypeFloat64}
		dbirth.Metrics = append(dbirth.Metrics, sparkplug.BirthMetric(def, uns.Sample{TS: at, Value: uns.Float(e.values[i])}, true, now))
	}
	return e.publish(e.topic(sparkplug.DBIRTH, benchDevice), dbirth, true)
}

// publish sends p with QoS 1; count says whether its metrics are device
// values to count. It returns once the client took the message; the
// broker's acknowledgement is counted when it comes.
func (e *simEdge) publish(topic string, p *pb.Payload, count bool) error {
	b, err := proto.Marshal(p)
	if err != nil {
		return err
	}
	n := int64(len(p.Metrics))
	tok := e.client.Publish(topic, 1, false, b)
	if count {
		e.c.sentValues.Add(n)
		e.c.sentMsgs.Add(1)
	}
	go func() {
		select {
		case <-tok.Done():
		case <-e.acks.Done():
			return
		}
		if tok.Error() != nil {
			e.c.failed.Add(1)
			return
		}
		if count {
			e.c.ackedValues.Add(n)
			e.c.ackedMsgs.Add(1)
		}
	}()
	return nil
}

// run publishes a DDATA at every tick of the fleet's rate until ctx ends.
func (e *simEdge) run(ctx context.Context) {
	every := time.Duration(float64(time.Second) / e.fleet.Rate)
	// Spread the edges over the period so their messages do not come in bursts.
	select {
	case <-time.After(time.Duration(e.rnd.Int64N(int64(every)))):
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := max(sparkplug.Millis(time.Now()), e.lastMs+1)
		e.lastMs = now
		at := sparkplug.Timestamp(now)
		p := &pb.Payload{Timestamp: proto.Uint64(now), Seq: proto.Uint64(e.nextSeq())}
		for i := range e.values {
			if e.rnd.Float64() >= e.fleet.ChangeRatio {
				continue
			}
			e.values[i]++
			p.Metrics = append(p.Metrics, sparkplug.DataMetric(uint64(i+1), uns.TypeFloat64, uns.Sample{TS: at, Value: uns.Float(e.values[i])}, false))
		}
		if len(p.Metrics) == 0 {
			e.seq = (e.seq + 255) % 256 // nothing changed: the sequence number was not used
			continue
		}
		_ = e.publish(e.topic(sparkplug.DDATA, benchDevice), p, true)
	}
}

// stop sends the node's death and disconnects.
func (e *simEdge) stop() {
	if e.client == nil || !e.client.IsConnected() {
		return
	}
	death, _ := proto.Marshal(sparkplug.NodeDeath(0, time.Now()))
	tok := e.client.Publish(e.topic(sparkplug.NDEATH, ""), 1, false, death)
	tok.WaitTimeout(5 * time.Second)
	e.client.Disconnect(250)
}

func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
