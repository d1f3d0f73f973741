package modbus

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Register areas.
const (
	AreaHolding  = "holding"
	AreaInput    = "input"
	AreaCoil     = "coil"
	AreaDiscrete = "discrete"
)

// words is how many 16-bit registers a type takes.
func words(typ string, length int) int {
	switch typ {
	case "int32", "uint32", "float32":
		return 2
	case "int64", "uint64", "float64":
		return 4
	case "string":
		return length
	}
	return 1 // int16, uint16, bit, bool in a register
}

// registerBytes lays out registers as bytes in the order the tag's
// byte_order and word_order say, most significant first.
func registerBytes(regs []uint16, littleBytes, littleWords bool) []byte {
	n := len(regs)
	b := make([]byte, 0, 2*n)
	for i := range n {
		r := regs[i]
		if littleWords {
			r = regs[n-1-i]
		}
		if littleBytes {
			r = r<<8 | r>>8
		}
		b = binary.BigEndian.AppendUint16(b, r)
	}
	return b
}

// decode turns a tag's registers into its raw value.
func (t *Tag) decode(regs []uint16) (uns.Value, error) {
	if t.Type == "string" {
		b := registerBytes(regs, t.ByteOrder == "little", false)
		return uns.String(strings.TrimRight(string(b), "\x00 ")), nil
	}
	b := registerBytes(regs, t.ByteOrder == "little", t.WordOrder == "little")
	switch t.Type {
	case "int16":
		return uns.Int(int64(int16(binary.BigEndian.Uint16(b)))), nil
	case "uint16":
		return uns.Int(int64(binary.BigEndian.Uint16(b))), nil
	case "int32":
		return uns.Int(int64(int32(binary.BigEndian.Uint32(b)))), nil
	case "uint32":
		return uns.Int(int64(binary.BigEndian.Uint32(b))), nil
	case "int64":
		return uns.Int(int64(binary.BigEndian.Uint64(b))), nil
	case "uint64":
		v := binary.BigEndian.Uint64(b)
		if v > math.MaxInt64 {
			return uns.Float(float64(v)), nil
		}
		return uns.Int(int64(v)), nil
	case "float32":
		return uns.Float(float64(math.Float32frombits(binary.BigEndian.Uint32(b)))), nil
	case "float64":
		return uns.Float(math.Float64frombits(binary.BigEndian.Uint64(b))), nil
	case "bit":
		return uns.Bool(binary.BigEndian.Uint16(b)&(1<<t.Bit) != 0), nil
	case "bool":
		return uns.Bool(binary.BigEndian.Uint16(b) != 0), nil
	}
	return uns.Null, fmt.Errorf("type %q cannot be decoded", t.Type)
}

// encode turns a raw value into the tag's registers, for writes.
func (t *Tag) encode(v uns.Value) ([]uint16, error) {
	f, _ := v.AsFloat()
	if err := t.inRange(v, f); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 8)
	switch t.Type {
	case "int16", "uint16", "bool":
		b = binary.BigEndian.AppendUint16(b, uint16(int64(math.Round(f))))
	case "int32", "uint32":
		b = binary.BigEndian.AppendUint32(b, uint32(int64(math.Round(f))))
	case "int64", "uint64":
		if v.Kind == uns.KindInt {
			b = binary.BigEndian.AppendUint64(b, uint64(v.I))
		} else {
			b = binary.BigEndian.AppendUint64(b, uint64(int64(math.Round(f))))
		}
	case "float32":
		b = binary.BigEndian.AppendUint32(b, math.Float32bits(float32(f)))
	case "float64":
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(f))
	default:
		return nil, fmt.Errorf("writes to %s tags are not supported", t.Type)
	}
	regs := make([]uint16, len(b)/2)
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	// Apply the tag's orders, the inverse of decode.
	if t.WordOrder == "little" {
		for i, j := 0, len(regs)-1; i < j; i, j = i+1, j-1 {
			regs[i], regs[j] = regs[j], regs[i]
		}
	}
	if t.ByteOrder == "little" {
		for i := range regs {
			regs[i] = regs[i]<<8 | regs[i]>>8
		}
	}
	return regs, nil
}

// block is one read request covering several tags of an area.
type block struct {
	area  string
	start uint16
	count uint16
	tags  []*Tag
	every time.Duration // the sampling interval of its tags
	due   time.Time     // when it is to be read next
}

// planAll plans the reads of each sampling interval apart.
func planAll(tags []*Tag, maxBlock, maxGap int) []*block {
	byEvery := map[time.Duration][]*Tag{}
	var everys []time.Duration
	for _, t := range tags {
		if _, ok := byEvery[t.every]; !ok {
			everys = append(everys, t.every)
		}
		byEvery[t.every] = append(byEvery[t.every], t)
	}
	slices.Sort(everys)
	var out []*block
	for _, e := range everys {
		for _, b := range plan(byEvery[e], maxBlock, maxGap) {
			b.every = e
			out = append(out, b)
		}
	}
	return out
}

// plan groups the tags of each area into the fewest reads: tags whose
// addresses are at most maxGap apart share a read of at most maxBlock
// registers (or bits).
func plan(tags []*Tag, maxBlock, maxGap int) []*block {
	byArea := map[string][]*Tag{}
	for _, t := range tags {
		byArea[t.Area] = append(byArea[t.Area], t)
	}
	var out []*block
	for _, area := range []string{AreaHolding, AreaInput, AreaCoil, AreaDiscrete} {
		ts := byArea[area]
		sort.Slice(ts, func(i, j int) bool { return ts[i].Address < ts[j].Address })
		limit := maxBlock
		if area == AreaCoil || area == AreaDiscrete {
			limit = min(maxBlock*16, 2000)
		}
		var cur *block
		for _, t := range ts {
			end := int(t.Address) + t.size()
			if cur != nil && int(t.Address)-int(cur.start+cur.count) <= maxGap && end-int(cur.start) <= limit {
				cur.count = uint16(max(int(cur.count), end-int(cur.start)))
				cur.tags = append(cur.tags, t)
				continue
			}
			cur = &block{area: area, start: t.Address, count: uint16(t.size()), tags: []*Tag{t}}
			out = append(out, cur)
		}
	}
	return out
}

// size is how many registers (or bits) the tag takes.
func (t *Tag) size() int {
	if t.Area == AreaCoil || t.Area == AreaDiscrete {
		return 1
	}
	return words(t.Type, t.Length)
}

// rawRange is what a register type holds, as numbers; ok is false for
// float64 and types that are not written.
func (t *Tag) rawRange() (lo, hi float64, ok bool) {
	switch t.Type {
	case "int16":
		return math.MinInt16, math.MaxInt16, true
	case "uint16":
		return 0, math.MaxUint16, true
	case "bool":
		return 0, 1, true
	case "int32":
		return math.MinInt32, math.MaxInt32, true
	case "uint32":
		return 0, math.MaxUint32, true
	case "int64":
		return math.MinInt64, math.MaxInt64, true
	case "uint64":
		return 0, math.MaxUint64, true
	case "float32":
		return -math.MaxFloat32, math.MaxFloat32, true
	}
	return 0, 0, false
}

// inRange refuses a raw value the tag's type cannot hold, instead of
// letting it wrap (70000 into a uint16 would write 4464).
func (t *Tag) inRange(v uns.Value, f float64) error {
	if v.Kind == uns.KindInt && (t.Type == "int64" || t.Type == "uint64") {
		if t.Type == "uint64" && v.I < 0 {
			return fmt.Errorf("%d is outside the range of a uint64", v.I)
		}
		return nil
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%v is not a finite number", f)
	}
	lo, hi, ok := t.rawRange()
	if !ok {
		return nil
	}
	if t.Type != "float32" {
		f = math.Round(f)
	}
	// The 64-bit limits are not exact as floats: 2^63 and 2^64 are out.
	over := f > hi || (t.Type == "int64" && f >= 1<<63) || (t.Type == "uint64" && f >= 1<<64)
	if f < lo || over {
		return fmt.Errorf("raw value %v is outside the range of a %s (%v to %v)", f, t.Type, lo, hi)
	}
	return nil
}
