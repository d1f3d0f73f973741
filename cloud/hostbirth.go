package cloud

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Births: what the host learns of an edge node's metrics, keeps for a
// restart, and writes as tag metadata.

// tagWriter stores tag metadata when births defined some, and what is left
// when the host stops.
func (h *Host) tagWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			h.storeTags(context.WithoutCancel(ctx))
			return
		case <-h.tagsDue:
			h.storeTags(ctx)
		}
	}
}

// restore replays the stored births so that aliases of data still in the
// stream can be resolved after a restart.
func (h *Host) restore(ctx context.Context) error {
	lister, err := h.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("host: births: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// Node births before device births: a node key has fewer tokens.
	sortByTokens(keys)
	for _, k := range keys {
		e, err := h.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		t, err := ParseSparkplugSubject(store.SubjectSparkplug + "." + k)
		if err != nil {
			continue
		}
		p, err := sparkplug.Decode(e.Value())
		if err != nil {
			continue
		}
		h.apply(ctx, t, p, e.Created(), false, false, nil)
		if ns := h.nodes[nodeKey(t)]; ns != nil {
			ns.lastSeq = -1
		}
	}
	// A crash can fall between a birth stored and its metadata stored.
	h.storeTags(ctx)
	return nil
}

func sortByTokens(keys []string) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && strings.Count(keys[j], ".") < strings.Count(keys[j-1], "."); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
}

func (h *Host) storeBirth(ctx context.Context, t sparkplug.Topic, p *pb.Payload) {
	b, err := proto.Marshal(p)
	if err == nil {
		key := strings.TrimPrefix(SparkplugSubject(sparkplug.Topic{Group: t.Group, Edge: t.Edge, Type: t.Type, Device: t.Device}), store.SubjectSparkplug+".")
		_, err = h.kv.Put(ctx, key, b)
	}
	if err != nil {
		h.log.Warn("birth not stored", "topic", t.String(), "err", err)
	}
}

// birth learns the metrics of a birth and returns their values, and the
// birth as it is kept for a restart (claims.go).
func (h *Host) birth(ctx context.Context, ns *nodeState, t sparkplug.Topic, p *pb.Payload, set metricSet) ([]uns.Sample, *pb.Payload) {
	var tags []uns.Tag
	var out []uns.Sample
	sc := h.newScope(ns, t)
	for _, m := range p.GetMetrics() {
		tags, out = h.learn(sc, m.GetName(), t, p, set, m, m.GetName(), "", tags, out)
	}
	h.report(sc, t)
	// Stored by the tag writer: the metadata write waits for the
	// historian's writer, and ingest must not.
	h.newTags = append(h.newTags, tags...)
	return out, allowedBirth(p, sc)
}

// storeTags writes the metadata of the tags births defined since the last
// call. A birth repeats its tags: one that changes nothing writes nothing.
func (h *Host) storeTags(ctx context.Context) {
	h.mu.Lock()
	tags := h.newTags
	h.newTags = nil
	h.mu.Unlock()
	if len(tags) == 0 || h.tags == nil {
		return
	}
	if err := h.tags.UpsertTags(ctx, tags); err != nil {
		h.log.Error("tag metadata not stored", "tags", len(tags), "err", err)
	}
}

// learn records one birth metric under name. A template instance becomes
// one tag per member, named <metric>/<member>; a template definition is
// a type, not a tag.
func (h *Host) learn(sc *birthScope, top string, t sparkplug.Topic, p *pb.Payload, set metricSet, m *pb.Payload_Metric, name string, base uns.Path,
	tags []uns.Tag, out []uns.Sample) ([]uns.Tag, []uns.Sample) {
	dt := pb.DataType(m.GetDatatype())
	if dt == pb.DataType_Template {
		tv := m.GetTemplateValue()
		if tv == nil || tv.GetIsDefinition() {
			return tags, out
		}
		mi := &metricInfo{name: name, dt: dt, member: base != ""}
		set.byName[name] = mi
		if m.Alias != nil {
			set.byAlias[m.GetAlias()] = mi
			mi.alias, mi.hasAlias = m.GetAlias(), true
		}
		mi.path = sparkplug.MetricPath(t, m, name, base)
		for _, member := range tv.GetMetrics() {
			tags, out = h.learn(sc, top, t, p, set, member, name+"/"+member.GetName(), mi.path, tags, out)
		}
		return tags, out
	}
	mi := &metricInfo{name: name, dt: dt, member: base != ""}
	udt, stored := sparkplug.Stored(name, dt)
	mi.store = stored
	mi.path = sparkplug.MetricPath(t, m, name, base)
	if err := mi.path.Validate(); err != nil {
		mi.store = false
		h.log.Warn("metric not stored: no valid UNS path", "topic", t.String(), "metric", name, "err", err)
	} else if mi.store && !h.claim(sc, t, mi.path, top) {
		mi.store = false
	}
	set.byName[name] = mi
	if m.Alias != nil {
		set.byAlias[m.GetAlias()] = mi
		mi.alias, mi.hasAlias = m.GetAlias(), true
	}
	if !mi.store {
		return tags, out
	}
	tag := sparkplug.BirthTag(t, m, name, mi.path, udt)
	tags = append(tags, tag)
	mi.tag = h.reg.Define(tag)
	// A birth metric with no value (is_null) is no reading: nothing is
	// stored for it, and the tag's first value, however old its time,
	// is its current value.
	if m.GetIsNull() {
		return tags, out
	}
	if s, ok := h.sample(p, m, mi); ok {
		out = append(out, s)
	}
	return tags, out
}
