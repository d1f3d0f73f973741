package edge

import (
	"fmt"
	"math"
	"runtime"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// The edge node's own metrics: buffer, health and connections, in NBIRTH
// and, when they change, NDATA.

// nodeMetrics returns the node's own figures by alias, without names:
// the buffer, and each device's connection.
func (n *node) nodeMetrics(ms uint64) []*pb.Payload_Metric {
	st := n.e.Stats()
	long := func(alias, v uint64) *pb.Payload_Metric {
		return &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_LongValue{LongValue: v}}
	}
	double := func(alias uint64, v float64) *pb.Payload_Metric {
		return &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_DoubleValue{DoubleValue: math.Round(v*100) / 100}}
	}
	cfg := n.e.ConfigStatus()
	out := []*pb.Payload_Metric{long(aliasBufferDropped, st.Dropped), long(aliasBufferDepth, st.BufferedMsgs),
		long(aliasConfigVersion, cfg.Applied),
		{Alias: proto.Uint64(aliasConfigError), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_StringValue{StringValue: cfg.Error}},
		long(aliasUptime, uint64(time.Since(n.e.started).Seconds())),
		double(aliasCPU, n.cpuPercent()), double(aliasMemory, memoryMiB()),
		long(aliasBufferBytes, st.BufferedBytes), double(aliasOldestUnsent, st.OldestUnconfirmed.Seconds()),
		long(aliasFiltered, st.Filtered), double(aliasReceiptDelay, float64(n.receiptDelay.Load())/float64(time.Millisecond)),
		double(aliasBufferPercent, 100*float64(st.BufferedBytes)/float64(n.opts.BufferMaxBytes))}
	upd := n.e.upd.state()
	str := func(alias uint64, v string) *pb.Payload_Metric {
		return &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_StringValue{StringValue: v}}
	}
	out = append(out, str(aliasUpdateVersion, upd.Version), str(aliasUpdateStep, upd.Step), double(aliasUpdatePercent, upd.Percent), str(aliasUpdateError, upd.Error))
	if st.Read > 0 {
		out = append(out, double(aliasReduction, 100*float64(st.Filtered)/float64(st.Read)))
	} else {
		out = append(out, double(aliasReduction, 0))
	}
	if free, ok := diskFree(n.opts.DataDir); ok {
		out = append(out, double(aliasDiskFree, float64(free)/(1<<20)))
	}
	for _, cs := range n.e.Connections() {
		a := cs.alias
		out = append(out,
			&pb.Payload_Metric{Alias: proto.Uint64(a), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_BooleanValue{BooleanValue: cs.Connected}},
			&pb.Payload_Metric{Alias: proto.Uint64(a + 1), Timestamp: proto.Uint64(ms), Value: &pb.Payload_Metric_StringValue{StringValue: cs.LastError}},
			long(a+2, cs.Reads), long(a+3, cs.Errors),
			double(a+4, float64(cs.Latency)/float64(time.Millisecond)), double(a+5, cs.ReadsPerSec), double(a+6, cs.ErrorsPerSec))
	}
	return out
}

// nodeMetricName names a node metric by its alias.
func (n *node) nodeMetricName(alias uint64) string {
	switch alias {
	case aliasBufferDropped:
		return "Buffer/Dropped"
	case aliasBufferDepth:
		return "Buffer/Messages"
	case aliasConfigVersion:
		return "Config/Version"
	case aliasConfigError:
		return "Config/Error"
	case aliasUptime:
		return "Health/UptimeSeconds"
	case aliasCPU:
		return "Health/CPUPercent"
	case aliasMemory:
		return "Health/MemoryMiB"
	case aliasDiskFree:
		return "Health/DiskFreeMiB"
	case aliasBufferBytes:
		return "Buffer/Bytes"
	case aliasOldestUnsent:
		return "Buffer/OldestUnsentSeconds"
	case aliasFiltered:
		return "Values/Filtered"
	case aliasReduction:
		return "Values/ReductionPercent"
	case aliasReceiptDelay:
		return "Receipt/DelayMs"
	case aliasBufferPercent:
		return "Buffer/FullPercent"
	case aliasUpdateVersion:
		return "Update/Version"
	case aliasUpdateStep:
		return "Update/Step"
	case aliasUpdatePercent:
		return "Update/Percent"
	case aliasUpdateError:
		return "Update/Error"
	}
	for _, d := range n.e.deviceList() {
		if alias >= d.connAlias && alias < d.connAlias+connMetrics {
			return "Connections/" + d.ID + "/" + [...]string{"Connected", "LastError", "Reads", "Errors", "LatencyMs", "ReadsPerSec", "ErrorsPerSec"}[alias-d.connAlias]
		}
	}
	return fmt.Sprintf("Metric%d", alias)
}

// metricKey tells whether a node metric's value changed.
func metricKey(m *pb.Payload_Metric) string {
	key := proto.Clone(m).(*pb.Payload_Metric)
	key.Timestamp = nil
	return key.String()
}

func nodeMetricType(m *pb.Payload_Metric) pb.DataType {
	switch m.Value.(type) {
	case *pb.Payload_Metric_BooleanValue:
		return pb.DataType_Boolean
	case *pb.Payload_Metric_StringValue:
		return pb.DataType_String
	case *pb.Payload_Metric_DoubleValue:
		return pb.DataType_Double
	}
	return pb.DataType_Int64
}

// nodeData publishes, at most every 5 s, the node metrics that changed
// since they were last sent.
func (n *node) nodeData() error {
	if !n.born.Load() || time.Since(n.nodeDataAt) < 5*time.Second {
		return nil
	}
	n.nodeDataAt = time.Now()
	ms := sparkplug.Millis(time.Now())
	p := &pb.Payload{Timestamp: proto.Uint64(ms)}
	for _, m := range n.nodeMetrics(ms) {
		if k := metricKey(m); n.sentNode[m.GetAlias()] != k {
			n.sentNode[m.GetAlias()] = k
			p.Metrics = append(p.Metrics, m)
		}
	}
	if len(p.Metrics) == 0 {
		return nil
	}
	p.Seq = n.nextSeq()
	return n.publish(n.topic(sparkplug.NDATA, ""), p)
}

// cpuPercent is the process's CPU use, in percent of one core, since the
// previous call.
func (n *node) cpuPercent() float64 {
	used, ok := cpuTime()
	if !ok {
		return 0
	}
	now := time.Now()
	defer func() { n.cpuAt, n.cpuUsed = now, used }()
	if n.cpuAt.IsZero() {
		return 0
	}
	wall := now.Sub(n.cpuAt)
	if wall <= 0 {
		return 0
	}
	return 100 * float64(used-n.cpuUsed) / float64(wall)
}

// memoryMiB is the memory the Go runtime holds from the system.
func memoryMiB() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.Sys) / (1 << 20)
}
