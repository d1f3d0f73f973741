// Package opcua is the OPC UA connector: it reads variables of an OPC UA
// server by subscription (monitored items, the default) or by polling, with
// source timestamps and status codes carried into quality, and writes
// writable variables.
package opcua

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/uns"
)

// Settings of an OPC UA server.
type Settings struct {
	Endpoint string `yaml:"endpoint"` // opc.tcp://host:4840/path
	// Security: policy None (default) or Basic256Sha256, mode None, Sign or
	// SignAndEncrypt (the default with a policy). With security, the
	// application certificate and key (PEM) are cert_file and key_file, or
	// are made in pki_dir/own on first use; the server's certificate must be
	// server_cert_file (PEM or DER) or be in pki_dir/trusted, and one that is
	// not is refused and written to pki_dir/rejected (see pki.go).
	SecurityPolicy string `yaml:"security_policy"`
	SecurityMode   string `yaml:"security_mode"`
	CertFile       string `yaml:"cert_file"`
	KeyFile        string `yaml:"key_file"`
	ServerCertFile string `yaml:"server_cert_file"`
	// PKIDir defaults to devices/<device>/pki in the edge's data dir.
	PKIDir   string `yaml:"pki_dir"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Mode: subscribe (default) or poll.
	Mode     string        `yaml:"mode"`
	Interval time.Duration `yaml:"interval"` // publishing and sampling interval, or poll interval
	Timeout  time.Duration `yaml:"timeout"`
	// QueueSize is how many changes the server keeps per monitored item
	// between publishes (default 10), so that fast changes are not lost.
	QueueSize uint32 `yaml:"queue_size"`
	Tags      []*Tag `yaml:"tags"`
}

// Tag is one variable.
type Tag struct {
	Name   string `yaml:"name"`
	NodeID string `yaml:"node_id"` // e.g. ns=2;s=Kiln1.Temperature
	Type   string `yaml:"type"`    // float64 (default), int64, bool, string
	// NodeType is the variable's OPC UA data type (Float, UInt32, ...):
	// writes are sent as it, and refused outside its range. Unset, a write
	// first reads the variable to learn it.
	NodeType string `yaml:"node_type"`
	// Unit, scaling, report by exception, writable. Without scaling, the
	// deadband also goes to the server as a DataChangeFilter.
	connector.TagOptions `yaml:",inline"`

	id *ua.NodeID
	dt uns.DataType
}

func init() {
	connector.RegisterSettings("opcua", nil, New)
}

// Server is the OPC UA connector of one server.
type Server struct {
	s      Settings
	device string
	log    *slog.Logger
	opts   []opcua.Option
	byName map[string]*Tag

	mu     sync.Mutex
	client *opcua.Client
}

var (
	_ connector.Connector = (*Server)(nil)
	_ connector.Writer    = (*Server)(nil)
)

// New validates the settings and loads the certificates.
func New(device string, s Settings, log *slog.Logger) (*Server, error) {
	if s.SecurityPolicy == "" {
		s.SecurityPolicy = "None"
	}
	if s.SecurityMode == "" {
		s.SecurityMode = "None"
		if s.SecurityPolicy != "None" {
			s.SecurityMode = "SignAndEncrypt"
		}
	}
	if s.Mode == "" {
		s.Mode = "subscribe"
	}
	if s.QueueSize == 0 {
		s.QueueSize = 10
	}
	if s.Interval == 0 {
		s.Interval = time.Second
	}
	if s.Timeout == 0 {
		s.Timeout = 10 * time.Second
	}
	var errs []error
	if !strings.HasPrefix(s.Endpoint, "opc.tcp://") {
		errs = append(errs, fmt.Errorf("endpoint %q: want opc.tcp://host:port[/path]", s.Endpoint))
	}
	switch s.SecurityPolicy {
	case "None", "Basic256Sha256":
	default:
		errs = append(errs, fmt.Errorf("security_policy %q: want None or Basic256Sha256", s.SecurityPolicy))
	}
	switch s.SecurityMode {
	case "None", "Sign", "SignAndEncrypt":
	default:
		errs = append(errs, fmt.Errorf("security_mode %q: want None, Sign or SignAndEncrypt", s.SecurityMode))
	}
	if (s.SecurityPolicy == "None") != (s.SecurityMode == "None") {
		errs = append(errs, fmt.Errorf("security_policy %s with security_mode %s: both None, or neither", s.SecurityPolicy, s.SecurityMode))
	}
	if s.Mode != "subscribe" && s.Mode != "poll" {
		errs = append(errs, fmt.Errorf("mode %q: want subscribe or poll", s.Mode))
	}
	if len(s.Tags) == 0 {
		errs = append(errs, errors.New("tags: at least one"))
	}
	srv := &Server{s: s, device: device, byName: map[string]*Tag{}}
	for i, t := range s.Tags {
		at := fmt.Sprintf("tags[%d] (%s)", i, t.Name)
		if err := uns.Path(t.Name).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if _, dup := srv.byName[t.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: name used twice", at))
		}
		srv.byName[t.Name] = t
		if err := t.Check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if t.Interval != 0 && s.Mode == "poll" {
			errs = append(errs, fmt.Errorf("%s: interval: a sampling interval per tag needs mode subscribe", at))
		}
		id, err := ua.ParseNodeID(t.NodeID)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s node_id %q: %v", at, t.NodeID, err))
		}
		t.id = id
		if t.Type == "" {
			t.Type = "float64"
		}
		if t.dt, err = uns.ParseDataType(t.Type); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if t.NodeType != "" {
			if _, ok := nodeTypes[t.NodeType]; !ok {
				errs = append(errs, fmt.Errorf("%s node_type %q: want one of %s", at, t.NodeType, strings.Join(nodeTypeNames(), ", ")))
			}
		}
	}
	opts := []opcua.Option{opcua.RequestTimeout(s.Timeout), opcua.AutoReconnect(false)}
	if (s.CertFile == "") != (s.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file: both, or neither (a certificate is then made in pki_dir)"))
	} else if s.CertFile != "" {
		if _, err := loadAppCert(s.CertFile, s.KeyFile, "", device); err != nil {
			errs = append(errs, err)
		}
	}
	if s.ServerCertFile != "" {
		if _, err := os.ReadFile(s.ServerCertFile); err != nil {
			errs = append(errs, fmt.Errorf("server_cert_file: %w", err))
		}
	}
	if s.Username != "" {
		opts = append(opts, opcua.AuthUsername(s.Username, s.Password))
	} else {
		opts = append(opts, opcua.AuthAnonymous())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("opcua %s: %w", device, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv.opts, srv.log = opts, log.With("component", "opcua", "device", device)
	return srv, nil
}

// Tags declares the variables.
func (srv *Server) Tags() []connector.TagDef {
	var out []connector.TagDef
	for _, t := range srv.s.Tags {
		def := t.Def(t.Name, t.dt)
		if nt, ok := nodeTypes[t.NodeType]; ok && nt.numeric && t.Writable {
			a, _ := t.ToEng(uns.Float(nt.lo)).AsFloat()
			b, _ := t.ToEng(uns.Float(nt.hi)).AsFloat()
			def.Narrow(min(a, b), max(a, b))
		}
		out = append(out, def)
	}
	return out
}

// Run connects and reads until ctx is done; a lost session makes the
// device lost, and it reconnects with capped exponential backoff and
// jitter, subscribing again.
func (srv *Server) Run(ctx context.Context, sink connector.Sink) error {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		err := srv.session(ctx, sink)
		if ctx.Err() != nil {
			return nil
		}
		sink.Lost(err)
		backoff = min(max(2*backoff, 500*time.Millisecond), 30*time.Second)
		wait := backoff/2 + rand.N(backoff/2+1)
		srv.log.Warn("server unreachable", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// connectOptions asks the server for its endpoints, picks the one of the
// configured policy and mode, and, with security, checks that the server's
// certificate is trusted and brings the application certificate.
func (srv *Server) connectOptions(ctx context.Context, sink connector.Sink) ([]opcua.Option, error) {
	eps, err := opcua.GetEndpoints(ctx, srv.s.Endpoint, opcua.RequestTimeout(srv.s.Timeout))
	if err != nil {
		return nil, fmt.Errorf("opcua %s: endpoints: %w", srv.s.Endpoint, err)
	}
	ep, err := opcua.SelectEndpoint(eps, srv.s.SecurityPolicy, ua.MessageSecurityModeFromString(srv.s.SecurityMode))
	if err != nil {
		return nil, fmt.Errorf("opcua %s: security %s %s: %w", srv.s.Endpoint, srv.s.SecurityPolicy, srv.s.SecurityMode, err)
	}
	opts := append([]opcua.Option(nil), srv.opts...)
	if ep.SecurityPolicyURI != ua.SecurityPolicyURINone {
		pki := srv.pkiDir(sink)
		cert, err := loadAppCert(srv.s.CertFile, srv.s.KeyFile, pki, srv.device)
		if err != nil {
			return nil, fmt.Errorf("opcua %s: %w", srv.s.Endpoint, err)
		}
		if err := trust(ep.ServerCertificate, srv.s.ServerCertFile, pki); err != nil {
			return nil, fmt.Errorf("opcua %s: %w", srv.s.Endpoint, err)
		}
		opts = append(opts, opcua.Certificate(cert.der), opcua.PrivateKey(cert.key))
		if cert.uri != "" {
			opts = append(opts, opcua.ApplicationURI(cert.uri))
		}
	}
	token := ua.UserTokenTypeAnonymous
	if srv.s.Username != "" {
		token = ua.UserTokenTypeUserName
	}
	return append(opts, opcua.SecurityFromEndpoint(ep, token)), nil
}

// pkiDir is the configured PKI directory, or the device's in the edge's
// data dir.
func (srv *Server) pkiDir(sink connector.Sink) string {
	if srv.s.PKIDir != "" {
		return srv.s.PKIDir
	}
	if d, ok := sink.(connector.DirSink); ok && d.DeviceDir() != "" {
		return filepath.Join(d.DeviceDir(), "pki")
	}
	return ""
}

func (srv *Server) session(ctx context.Context, sink connector.Sink) error {
	opts, err := srv.connectOptions(ctx, sink)
	if err != nil {
		return err
	}
	c, err := opcua.NewClient(srv.s.Endpoint, opts...)
	if err != nil {
		return fmt.Errorf("opcua %s: %w", srv.s.Endpoint, err)
	}
	if err := c.Connect(ctx); err != nil {
		return fmt.Errorf("opcua %s: %w", srv.s.Endpoint, err)
	}
	srv.mu.Lock()
	srv.client = c
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		srv.client = nil
		srv.mu.Unlock()
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c.Close(cctx)
		cancel()
	}()
	if srv.s.Mode == "poll" {
		return srv.poll(ctx, c, sink)
	}
	return srv.subscribe(ctx, c, sink)
}

// poll reads every variable in one request per interval.
func (srv *Server) poll(ctx context.Context, c *opcua.Client, sink connector.Sink) error {
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
	for _, t := range srv.s.Tags {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: t.id, AttributeID: ua.AttributeIDValue})
	}
	tick := time.NewTicker(srv.s.Interval)
	defer tick.Stop()
	for {
		res, err := c.Read(ctx, req)
		if err != nil {
			return fmt.Errorf("opcua %s: read: %w", srv.s.Endpoint, err)
		}
		now := time.Now()
		rs := make([]connector.Reading, 0, len(res.Results))
		for i, dv := range res.Results {
			if i < len(srv.s.Tags) {
				rs = append(rs, srv.reading(srv.s.Tags[i], dv, now))
			}
		}
		sink.Emit(rs)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// monitorPerCall is the most monitored items created by one call.
const monitorPerCall = 1000

// subscribe creates monitored items for every variable and emits what the
// server publishes.
func (srv *Server) subscribe(ctx context.Context, c *opcua.Client, sink connector.Sink) error {
	notes := make(chan *opcua.PublishNotificationData, 64)
	sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: srv.s.Interval}, notes)
	if err != nil {
		return fmt.Errorf("opcua %s: subscribe: %w", srv.s.Endpoint, err)
	}
	var items []*ua.MonitoredItemCreateRequest
	for i, t := range srv.s.Tags {
		items = append(items, srv.item(i, t, true))
	}
	results, err := srv.monitor(ctx, sub, items)
	if err != nil {
		return err
	}
	// A server that refuses the deadband filter gets the item without it:
	// report by exception then happens at the edge alone.
	var retry []*ua.MonitoredItemCreateRequest
	for i, r := range results {
		if i < len(srv.s.Tags) && r.StatusCode != ua.StatusOK && items[i].RequestedParameters.Filter != nil {
			retry = append(retry, srv.item(i, srv.s.Tags[i], false))
		}
	}
	if len(retry) > 0 {
		again, err := srv.monitor(ctx, sub, retry)
		if err != nil {
			return err
		}
		for k, r := range again {
			results[retry[k].RequestedParameters.ClientHandle] = r
		}
	}
	now := time.Now()
	var bad []connector.Reading
	for i, r := range results {
		if r.StatusCode != ua.StatusOK && i < len(srv.s.Tags) {
			t := srv.s.Tags[i]
			srv.log.Warn("variable refused by the server", "tag", t.Name, "node_id", t.NodeID, "status", r.StatusCode)
			bad = append(bad, connector.Reading{Tag: t.Name, TS: now, Value: uns.Null, Quality: uns.Bad})
		}
	}
	if len(bad) > 0 {
		sink.Emit(bad)
	}
	// The client tells a lost session only through calls: check it.
	keepalive := time.NewTicker(max(srv.s.Interval, 2*time.Second))
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-keepalive.C:
			if c.State() != opcua.Connected {
				return fmt.Errorf("opcua %s: session lost", srv.s.Endpoint)
			}
		case n := <-notes:
			if n.Error != nil {
				return fmt.Errorf("opcua %s: %w", srv.s.Endpoint, n.Error)
			}
			dc, ok := n.Value.(*ua.DataChangeNotification)
			if !ok {
				continue
			}
			now := time.Now()
			rs := make([]connector.Reading, 0, len(dc.MonitoredItems))
			for _, item := range dc.MonitoredItems {
				if int(item.ClientHandle) < len(srv.s.Tags) {
					rs = append(rs, srv.reading(srv.s.Tags[item.ClientHandle], item.Value, now))
				}
			}
			sink.Emit(rs)
		}
	}
}

// monitor creates items on sub, monitorPerCall at a time (servers bound
// the items of one call, and the size of a message), and returns their
// results in the order of items.
func (srv *Server) monitor(ctx context.Context, sub *opcua.Subscription, items []*ua.MonitoredItemCreateRequest) ([]*ua.MonitoredItemCreateResult, error) {
	var results []*ua.MonitoredItemCreateResult
	for start := 0; start < len(items); start += monitorPerCall {
		end := min(start+monitorPerCall, len(items))
		res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, items[start:end]...)
		if err != nil {
			return nil, fmt.Errorf("opcua %s: monitor items %d to %d of %d: %w", srv.s.Endpoint, start+1, end, len(items), err)
		}
		if len(res.Results) != end-start {
			return nil, fmt.Errorf("opcua %s: monitor items %d to %d of %d: %d results", srv.s.Endpoint, start+1, end, len(items), len(res.Results))
		}
		results = append(results, res.Results...)
	}
	return results, nil
}

// item is the monitored item of tag i; with filter, the tag's deadband goes
// to the server as a DataChangeFilter, so that unchanged values do not even
// cross the network.
func (srv *Server) item(i int, t *Tag, filter bool) *ua.MonitoredItemCreateRequest {
	item := opcua.NewMonitoredItemCreateRequestWithDefaults(t.id, ua.AttributeIDValue, uint32(i))
	item.RequestedParameters.SamplingInterval = float64(cmp.Or(t.Interval, srv.s.Interval).Milliseconds())
	item.RequestedParameters.QueueSize = srv.s.QueueSize
	item.RequestedParameters.DiscardOldest = true
	if !filter || t.Scaled() {
		return item // the server's deadband would be in raw units
	}
	var f *ua.DataChangeFilter
	switch {
	case t.Deadband > 0:
		f = &ua.DataChangeFilter{Trigger: ua.DataChangeTriggerStatusValue, DeadbandType: uint32(ua.DeadbandTypeAbsolute), DeadbandValue: t.Deadband}
	case t.DeadbandPct > 0:
		f = &ua.DataChangeFilter{Trigger: ua.DataChangeTriggerStatusValue, DeadbandType: uint32(ua.DeadbandTypePercent), DeadbandValue: t.DeadbandPct}
	}
	if f != nil {
		item.RequestedParameters.Filter = ua.NewExtensionObject(f)
	}
	return item
}

// reading turns a data value into a reading: the source timestamp when the
// server gives one, the status code as quality.
func (srv *Server) reading(t *Tag, dv *ua.DataValue, now time.Time) connector.Reading {
	r := connector.Reading{Tag: t.Name, TS: now, Value: uns.Null, Quality: uns.Bad}
	if dv == nil {
		return r
	}
	if !dv.SourceTimestamp.IsZero() {
		r.TS = dv.SourceTimestamp
	}
	switch {
	case dv.Status == ua.StatusOK:
		r.Quality = uns.Good
	case uint32(dv.Status)&0xC0000000 == 0x40000000:
		r.Quality = uns.Uncertain
	default:
		return r
	}
	if dv.Value == nil {
		r.Quality = uns.Bad
		return r
	}
	v, err := convert(dv.Value.Value(), t.dt)
	if err != nil {
		srv.log.Debug("value not converted", "tag", t.Name, "err", err)
		r.Quality = uns.Bad
		return r
	}
	r.Value = t.ToEng(v)
	return r
}

// Write sets a writable variable.
func (srv *Server) Write(ctx context.Context, tag string, v uns.Value) error {
	t, ok := srv.byName[tag]
	if !ok || !t.Writable {
		return fmt.Errorf("opcua %s: tag %q is not writable", srv.device, tag)
	}
	srv.mu.Lock()
	c := srv.client
	srv.mu.Unlock()
	if c == nil {
		return fmt.Errorf("opcua %s: not connected", srv.device)
	}
	nodeType := t.NodeType
	if nodeType == "" {
		var err error
		if nodeType, err = srv.learnType(ctx, c, t); err != nil {
			return fmt.Errorf("opcua %s: tag %s: %w", srv.device, tag, err)
		}
	}
	x, err := toNodeType(t.ToRaw(v), nodeType)
	if err != nil {
		return fmt.Errorf("opcua %s: tag %s: %w", srv.device, tag, err)
	}
	variant, err := ua.NewVariant(x)
	if err != nil {
		return fmt.Errorf("opcua %s: tag %s: %w", srv.device, tag, err)
	}
	res, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{NodeID: t.id, AttributeID: ua.AttributeIDValue,
		Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant}}}})
	if err != nil {
		return fmt.Errorf("opcua %s: tag %s: %w", srv.device, tag, err)
	}
	if len(res.Results) > 0 && res.Results[0] != ua.StatusOK {
		return fmt.Errorf("opcua %s: tag %s: %w", srv.device, tag, res.Results[0])
	}
	return nil
}

// learnType reads a variable's value to learn its data type, for a write
// of a tag whose node_type is not set.
func (srv *Server) learnType(ctx context.Context, c *opcua.Client, t *Tag) (string, error) {
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: t.id, AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return "", fmt.Errorf("reading its data type: %w", err)
	}
	if len(res.Results) == 0 || res.Results[0].Value == nil {
		return "", errors.New("reading its data type: no value (set node_type)")
	}
	typ, ok := nodeTypeOf(res.Results[0].Value.Value())
	if !ok {
		return "", fmt.Errorf("its data type %T cannot be written", res.Results[0].Value.Value())
	}
	return typ, nil
}
