package release

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The messages between the cloud and an edge about updates, over the
// edge's MQTT connection (sparkplug.UpdateTopic and its neighbours).

// Assignment is the release the cloud wants an edge to run: every build of
// it, the edge picks its platform's.
type Assignment struct {
	Version string     `json:"version"`
	Rollout string     `json:"rollout,omitempty"`
	Builds  []Manifest `json:"builds"`
}

// Build returns the assignment's build for a platform.
func (a Assignment) Build(goos, goarch string) (Manifest, bool) {
	for _, m := range a.Builds {
		if m.OS == goos && m.Arch == goarch {
			return m, true
		}
	}
	return Manifest{}, false
}

// MaxChunk bounds a piece of a build asked for at once.
const MaxChunk = 1 << 20

// ChunkRequest asks for Length bytes of the build whose SHA-256 is SHA256,
// from Offset.
type ChunkRequest struct {
	SHA256 string `json:"sha256"`
	Offset int64  `json:"offset"`
	Length int    `json:"length"`
}

// Validate checks a request read from the network.
func (r ChunkRequest) Validate() error {
	switch {
	case !sha256Re.MatchString(r.SHA256):
		return fmt.Errorf("chunk request: sha256 %q", r.SHA256)
	case r.Offset < 0:
		return fmt.Errorf("chunk request: offset %d", r.Offset)
	case r.Length <= 0 || r.Length > MaxChunk:
		return fmt.Errorf("chunk request: length %d: 1 to %d", r.Length, MaxChunk)
	}
	return nil
}

// ChunkHeader heads a piece of a build: which build, where the piece
// starts, the build's whole size, or why there is no piece.
type ChunkHeader struct {
	SHA256 string `json:"sha256"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	Error  string `json:"error,omitempty"`
}

// EncodeChunk is a piece as sent: its header as a JSON line, then its
// bytes.
func EncodeChunk(h ChunkHeader, data []byte) []byte {
	hb, _ := json.Marshal(h)
	out := make([]byte, 0, len(hb)+1+len(data))
	out = append(append(hb, '\n'), data...)
	return out
}

// DecodeChunk reads a piece; its bytes alias b.
func DecodeChunk(b []byte) (ChunkHeader, []byte, error) {
	var h ChunkHeader
	i := bytes.IndexByte(b, '\n')
	if i < 0 || i > 1024 {
		return h, nil, errors.New("chunk: no header line")
	}
	if err := json.Unmarshal(b[:i], &h); err != nil {
		return h, nil, fmt.Errorf("chunk: header: %w", err)
	}
	data := b[i+1:]
	if h.Error == "" && (h.Offset < 0 || h.Offset > h.Size || int64(len(data)) > h.Size-h.Offset) {
		return h, nil, fmt.Errorf("chunk: %d bytes at %d past the size %d", len(data), h.Offset, h.Size)
	}
	return h, data, nil
}
