//go:build !unix

package main

// privateFiles has nothing to do where there is no umask; the files' own
// modes say who may read them.
func privateFiles() {}
