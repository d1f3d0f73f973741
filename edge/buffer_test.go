package edge

import (
	"context"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TestBufferBoundsCountWhatTheyDrop fills a small buffer past its size
// bound: the oldest values go, and every one of them is counted.
func TestBufferBoundsCountWhatTheyDrop(t *testing.T) {
	ctx := context.Background()
	b, err := openBuffer(ctx, t.TempDir(), 64<<10, time.Hour, time.Second, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	batch := make([]uns.Sample, 10)
	for i := range batch {
		batch[i] = uns.Sample{Path: "a/b/c/d/e/tag", TS: time.Now(), Value: uns.Float(float64(i))}
	}
	for range 2000 {
		if err := b.append(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := b.state(ctx)
	if err := b.enforceBounds(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := b.state(ctx)
	if after.Bytes > 64<<10 {
		t.Fatalf("buffer holds %d bytes, bound 64 KiB", after.Bytes)
	}
	if want := (before.Msgs - after.Msgs) * 10; b.dropped.Load() != want {
		t.Fatalf("dropped %d values, %d messages of 10 went", b.dropped.Load(), before.Msgs-after.Msgs)
	}
	if after.FirstSeq <= before.FirstSeq || after.LastSeq != before.LastSeq {
		t.Fatalf("not the oldest dropped: %d..%d became %d..%d", before.FirstSeq, before.LastSeq, after.FirstSeq, after.LastSeq)
	}
}

func TestBufferAgeBound(t *testing.T) {
	ctx := context.Background()
	b, err := openBuffer(ctx, t.TempDir(), 1<<30, 50*time.Millisecond, time.Second, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	if err := b.append(ctx, []uns.Sample{{Path: "a/b", TS: time.Now(), Value: uns.Int(1)}, {Path: "a/c", TS: time.Now(), Value: uns.Int(2)}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := b.append(ctx, []uns.Sample{{Path: "a/b", TS: time.Now(), Value: uns.Int(3)}}); err != nil {
		t.Fatal(err)
	}
	if err := b.enforceBounds(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := b.state(ctx)
	if st.Msgs != 1 || b.dropped.Load() != 2 {
		t.Fatalf("%d messages left, %d values dropped; want 1 and 2", st.Msgs, b.dropped.Load())
	}
}
