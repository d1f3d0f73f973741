package main

import (
	"fmt"
	"io"
	"os"

	"github.com/calx-iiot/calx/fleet"
)

func cmdConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config validate <fleet.yaml>", `Check a fleet config offline: templates and what they extend, every device's
expansion with its parameters, and every connector's settings. Prints each
edge with its devices when the file is good.`, stdout, stderr)
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fs.Usage()
		return nil
	}
	if len(args) != 2 || args[0] != "validate" {
		fmt.Fprintln(stderr, "usage: calx config validate <fleet.yaml>")
		return shownError{errUsage}
	}
	b, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	c, err := fleet.Parse(args[1], b)
	if err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s:\n%w", args[1], err)
	}
	fmt.Fprintf(stdout, "%s: %d templates, %d edges\n", args[1], len(c.Templates), len(c.Edges))
	for _, e := range c.Edges {
		fmt.Fprintf(stdout, "  %s (site %s): %d devices\n", e.Key(), e.Site, len(e.Devices))
	}
	return nil
}
