// Command calx is the Calx Industrial IoT platform in one binary: `calx edge`
// on a site PC, `calx cloud` on a VM, and `calx demo` for a trial with
// simulated lime kilns.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/calx-iiot/calx/cloud"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

const usage = `Calx brings plant data from machines to people, across many sites,
without losing a value.

Usage:
  calx <command> [flags]

Commands:
  demo      run a cloud and two simulated lime plant edges in one process
  edge      run an edge on a site PC: read machines, publish Sparkplug B
  cloud     run the cloud: broker, backbone, primary host, historian, UI
  version   print version information
  hash-password
            read a password on standard input and print its bcrypt hash
            for cloud.yaml
  opcua browse <endpoint>
            print an OPC UA server's variables as tags for an edge config
  config validate <fleet.yaml>
            check a fleet config (templates, edges, devices) offline
  bench     measure the whole pipeline with simulated edges: values/s
            per stage, latency, CPU, memory, drops
  mcp       bridge an AI assistant that speaks MCP over stdio to a cloud's
            /mcp endpoint
  release   make signing keys, sign and check edge builds for updates
  help      print help for a command

Run 'calx help <command>' or 'calx <command> --help' for its flags.
`

// errUsage marks a usage error; the process exits with code 2.
var errUsage = errors.New("usage")

// shownError is a usage error the flag package has already printed.
type shownError struct{ error }

func (e shownError) Unwrap() error { return e.error }

func main() {
	privateFiles()
	stop := cpuProfile(os.Getenv("CALX_CPU_PROFILE"), os.Stderr)
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cpuProfile, given a file name, profiles the process's CPU into it until
// stop is called (at a clean exit: a SIGTERM, not a SIGKILL), for
// `go tool pprof` (docs/MONITORING.md).
func cpuProfile(file string, stderr io.Writer) (stop func()) {
	if file == "" {
		return func() {}
	}
	f, err := os.Create(file)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "calx: CALX_CPU_PROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run executes the command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "demo":
		err = cmdDemo(rest, stdout, stderr)
	case "edge":
		err = cmdEdge(rest, stdout, stderr)
	case "cloud":
		err = cmdCloud(rest, stdout, stderr)
	case "opcua":
		err = cmdOPCUA(rest, stdout, stderr)
	case "config":
		err = cmdConfig(rest, stdout, stderr)
	case "bench":
		err = cmdBench(rest, stdout, stderr)
	case "mcp":
		err = cmdMCP(rest, os.Stdin, stdout, stderr)
	case "release":
		err = cmdRelease(rest, stdout, stderr)
	case "hash-password":
		err = cmdHashPassword(rest, os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		err = cmdVersion(rest, stdout, stderr)
	case "help", "-h", "--help", "-help":
		return cmdHelp(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "calx: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errRestart):
		return exitRestart
	case errors.Is(err, errUsage):
		if !errors.As(err, new(shownError)) {
			fmt.Fprintf(stderr, "calx %s: %v\n", cmd, err)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "calx %s: %v\n", cmd, err)
		return 1
	}
}

func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return 0
	}
	switch args[0] {
	case "demo", "edge", "cloud", "version", "hash-password", "opcua", "config", "bench", "mcp", "release":
		return run([]string{args[0], "--help"}, stdout, stderr)
	}
	fmt.Fprintf(stderr, "calx help: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name, synopsis string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("calx "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fs.SetOutput(stdout)
		fmt.Fprintf(stdout, "Usage: calx %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return fs
}

// parse parses flags; a bad flag or a stray argument is a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return shownError{fmt.Errorf("%w: %v", errUsage, err)}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return shownError{fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))}
	}
	return nil
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "Print the version of Calx, its commit, and the Go and DuckDB versions it was built with.", stdout, stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "calx %s\ncommit %s\ngo %s %s/%s\nduckdb %s\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH, duckdbVersion())
	return nil
}

func cmdHashPassword(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("hash-password", "Read a password from the first line of standard input and print its bcrypt hash,\nfor password_hash in cloud.yaml.", stdout, stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return errors.New("no password on standard input")
	}
	h, err := cloud.HashPassword(pw)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, h)
	return nil
}

// versionCommit is the version with the commit, as an edge reports itself.
func versionCommit() string {
	c := buildCommit()
	if len(c) > 12 {
		c = c[:12]
	}
	return version + " (" + c + ")"
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func duckdbVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/duckdb/duckdb-go/v2" {
				return "duckdb-go " + d.Version
			}
		}
	}
	return "unknown"
}

// newLogger logs at level to w, as text for a person at a terminal and as
// JSON lines for a log collector (format auto), or as format says.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "auto":
		if isTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("%w: --log-format %q: want auto, text or json", errUsage, format)
}

// isTerminal tells whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// shutdownTimeout bounds a clean stop.
const shutdownTimeout = 4 * time.Second
