package release

import (
	"bytes"
	"testing"
)

func TestChunkRoundTrip(t *testing.T) {
	h := ChunkHeader{SHA256: "ab", Offset: 10, Size: 20}
	got, data, err := DecodeChunk(EncodeChunk(h, []byte("0123456789")))
	if err != nil || got != h || string(data) != "0123456789" {
		t.Fatalf("%+v %q %v", got, data, err)
	}
	for _, bad := range [][]byte{nil, []byte("{}"), []byte("{\n"), EncodeChunk(ChunkHeader{Offset: 15, Size: 20}, []byte("0123456789")),
		EncodeChunk(ChunkHeader{Offset: -1, Size: 20}, nil), []byte("{\"offset\":9223372036854775807,\"size\":1}\nxx"), append(bytes.Repeat([]byte(" "), 2000), '\n')} {
		if _, _, err := DecodeChunk(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
	if err := (ChunkRequest{SHA256: "x", Length: 1}).Validate(); err == nil {
		t.Error("a bad sha256 taken")
	}
	if err := (ChunkRequest{SHA256: string(bytes.Repeat([]byte("a"), 64)), Length: MaxChunk + 1}).Validate(); err == nil {
		t.Error("an oversized request taken")
	}
}

// FuzzDecodeChunk: no input read from the network panics the decoder, and
// what it accepts stays inside the build's size.
func FuzzDecodeChunk(f *testing.F) {
	f.Add(EncodeChunk(ChunkHeader{SHA256: "ab", Offset: 0, Size: 4}, []byte("abcd")))
	f.Add(EncodeChunk(ChunkHeader{Error: "no such build"}, nil))
	f.Add([]byte("{\"offset\":9223372036854775807,\"size\":1}\nxx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, data, err := DecodeChunk(b)
		if err == nil && h.Error == "" && (h.Offset < 0 || h.Offset > h.Size || int64(len(data)) > h.Size-h.Offset) {
			t.Fatalf("accepted %+v with %d bytes", h, len(data))
		}
	})
}
