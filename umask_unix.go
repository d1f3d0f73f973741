//go:build unix

package main

import "syscall"

// privateFiles makes every file and folder the process creates its own
// alone (0600, 0700), whatever the modes of the folders they are put in:
// histories, buffers, keys and configs included.
func privateFiles() { syscall.Umask(0o077) }
