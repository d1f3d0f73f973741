package uns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// batchVersion is the first byte of an encoded batch.
const batchVersion = 1

// ErrBadBatch is returned, wrapped with the reason, for bytes that are not a
// batch written by AppendBatch.
var ErrBadBatch = errors.New("malformed sample batch")

// Flags byte layout: bits 0-2 kind, bits 3-4 quality, bit 5 historical.
const (
	flagKindMask    = 0x07
	flagQualShift   = 3
	flagQualMask    = 0x18
	flagHistorical  = 0x20
	maxBatchSamples = 1 << 20
)

// AppendBatch appends the compact binary encoding of samples to dst. Many
// samples travel in one backbone message: per-message costs dominate, so
// batching is what makes the backbone fast.
func AppendBatch(dst []byte, samples []Sample) []byte {
	dst = append(dst, batchVersion)
	dst = binary.AppendUvarint(dst, uint64(len(samples)))
	for i := range samples {
		s := &samples[i]
		dst = binary.AppendUvarint(dst, uint64(len(s.Path)))
		dst = append(dst, s.Path...)
		dst = binary.AppendVarint(dst, s.TS.UnixNano())
		flags := byte(s.Value.Kind)&flagKindMask | byte(s.Quality)<<flagQualShift&flagQualMask
		if s.Historical {
			flags |= flagHistorical
		}
		dst = append(dst, flags)
		switch s.Value.Kind {
		case KindFloat:
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(s.Value.F))
		case KindInt, KindBool:
			dst = binary.AppendVarint(dst, s.Value.I)
		case KindString:
			dst = binary.AppendUvarint(dst, uint64(len(s.Value.S)))
			dst = append(dst, s.Value.S...)
		}
	}
	return dst
}

// DecodeBatch decodes a batch written by AppendBatch, appending to dst.
func DecodeBatch(dst []Sample, b []byte) ([]Sample, error) {
	return decodeBatch(dst, b, nil)
}

// DecodeBatchFunc is DecodeBatch for a reader that wants some paths only:
// it appends the samples whose path keep accepts, and checks the others
// without copying them. keep must not hold on to the path it is given.
func DecodeBatchFunc(dst []Sample, b []byte, keep func(path []byte) bool) ([]Sample, error) {
	return decodeBatch(dst, b, keep)
}

func decodeBatch(dst []Sample, b []byte, keep func([]byte) bool) ([]Sample, error) {
	if len(b) == 0 {
		return dst, fmt.Errorf("%w: empty", ErrBadBatch)
	}
	if b[0] != batchVersion {
		return dst, fmt.Errorf("%w: version %d", ErrBadBatch, b[0])
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxBatchSamples || n > uint64(len(b)) {
		return dst, fmt.Errorf("%w: bad count", ErrBadBatch)
	}
	b = b[k:]
	if keep == nil {
		dst = slices.Grow(dst, int(min(n, 4096))) // room up front, not more than a hostile count deserves
	}
	for i := uint64(0); i < n; i++ {
		var s Sample
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return dst, fmt.Errorf("%w: sample %d: bad path length", ErrBadBatch, i)
		}
		path := b[k : k+int(l)]
		kept := keep == nil || keep(path)
		if kept {
			s.Path = Path(path)
		}
		b = b[k+int(l):]
		ts, k := binary.Varint(b)
		if k <= 0 {
			return dst, fmt.Errorf("%w: sample %d: bad timestamp", ErrBadBatch, i)
		}
		s.TS = time.Unix(0, ts).UTC()
		b = b[k:]
		if len(b) < 1 {
			return dst, fmt.Errorf("%w: sample %d: cut short", ErrBadBatch, i)
		}
		flags := b[0]
		b = b[1:]
		s.Value.Kind = Kind(flags & flagKindMask)
		s.Quality = Quality(flags & flagQualMask >> flagQualShift)
		s.Historical = flags&flagHistorical != 0
		if s.Quality > Bad || flags&^(flagKindMask|flagQualMask|flagHistorical) != 0 {
			return dst, fmt.Errorf("%w: sample %d: bad flags %#x", ErrBadBatch, i, flags)
		}
		switch s.Value.Kind {
		case KindNull:
		case KindFloat:
			if len(b) < 8 {
				return dst, fmt.Errorf("%w: sample %d: cut short", ErrBadBatch, i)
			}
			s.Value.F = math.Float64frombits(binary.LittleEndian.Uint64(b))
			b = b[8:]
		case KindInt, KindBool:
			v, k := binary.Varint(b)
			if k <= 0 {
				return dst, fmt.Errorf("%w: sample %d: bad integer", ErrBadBatch, i)
			}
			s.Value.I = v
			b = b[k:]
		case KindString:
			l, k := binary.Uvarint(b)
			if k <= 0 || l > uint64(len(b)-k) {
				return dst, fmt.Errorf("%w: sample %d: bad string length", ErrBadBatch, i)
			}
			if kept {
				s.Value.S = string(b[k : k+int(l)])
			}
			b = b[k+int(l):]
		default:
			return dst, fmt.Errorf("%w: sample %d: unknown kind %d", ErrBadBatch, i, s.Value.Kind)
		}
		if kept {
			dst = append(dst, s)
		}
	}
	if len(b) != 0 {
		return dst, fmt.Errorf("%w: %d trailing bytes", ErrBadBatch, len(b))
	}
	return dst, nil
}
