package edge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The birth/death sequence number, kept across restarts.

// bdSeqStore keeps the next birth/death sequence number in the data dir.
type bdSeqStore struct{ path string }

// peek returns the bdSeq of the next CONNECT.
func (s bdSeqStore) peek() (uint64, error) {
	b, err := os.ReadFile(s.path)
	switch {
	case err == nil:
		cur, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || cur > 255 {
			return 0, fmt.Errorf("bdSeq file %s: bad content %q", s.path, b)
		}
		return cur, nil
	case errors.Is(err, os.ErrNotExist):
		return 0, nil
	}
	return 0, fmt.Errorf("bdSeq file: %w", err)
}

// spend records that a CONNECT carried bdSeq cur: the next one has cur+1.
func (s bdSeqStore) spend(cur uint64) error {
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint((cur+1)%256, 10)), 0o600); err != nil {
		return fmt.Errorf("bdSeq file: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("bdSeq file: %w", err)
	}
	return nil
}

func (e *Edge) bdSeqFile() bdSeqStore {
	return bdSeqStore{path: filepath.Join(e.opts.DataDir, "bdseq")}
}
