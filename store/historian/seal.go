package historian

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// What the engine may reach of the file system, locked at Open.

// seal switches the engine's file access off but for the archive and the
// exports folder, and locks the configuration, so that no statement run on
// this instance (the SQL endpoint's among them) can read or write another
// file, load an extension or turn any of it back on.
func (h *Historian) seal(ctx context.Context) error {
	var dirs, paths []string
	for _, d := range []string{h.ArchiveDir(), h.exportDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("historian %s: %w", h.path, err)
		}
		abs, err := filepath.Abs(d)
		if err != nil {
			return fmt.Errorf("historian %s: %w", h.path, err)
		}
		quoted := "'" + strings.ReplaceAll(filepath.ToSlash(abs), "'", "''")
		dirs = append(dirs, quoted+"/'")
		paths = append(paths, quoted+"'") // the archive's partitioned COPY names the folder itself
	}
	for _, q := range []string{
		"SET allowed_directories = [" + strings.Join(dirs, ", ") + "]",
		"SET allowed_paths = [" + strings.Join(paths, ", ") + "]",
		"SET enable_external_access = false",
		"SET lock_configuration = true",
	} {
		if _, err := h.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("historian %s: sealing the engine: %w", h.path, err)
		}
	}
	return nil
}

// exportDir is where Parquet exports are written before they are handed
// out: <history file>.exports.
func (h *Historian) exportDir() string { return h.path + ".exports" }
