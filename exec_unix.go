//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// reexec replaces the process with the binary exe, same arguments and
// environment: the process id stays, for a service manager that watches it.
func reexec(exe string) error {
	return fmt.Errorf("restart into %s: %w", exe, syscall.Exec(exe, os.Args, os.Environ()))
}
