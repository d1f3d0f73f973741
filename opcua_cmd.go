package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/calx-iiot/calx/edge/opcua"
)

func cmdOPCUA(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("opcua browse <endpoint>", `Browse an OPC UA server's address space from its Objects folder and print
its variables (node id, browse path, datatype, access) as YAML tags that can be
pasted into a device with connector: opcua.`, stdout, stderr)
	depth := fs.Int("depth", 8, "how many levels to descend")
	policy := fs.String("security-policy", "None", "None or Basic256Sha256")
	mode := fs.String("security-mode", "", "None, Sign or SignAndEncrypt (default: None without a policy, else SignAndEncrypt)")
	cert := fs.String("cert", "", "application certificate (PEM), with a security policy; default: made in --pki-dir")
	key := fs.String("key", "", "application key (PEM), with a security policy")
	serverCert := fs.String("server-cert", "", "server certificate to trust (PEM or DER), with a security policy")
	pki := fs.String("pki-dir", "", "PKI directory (own/, trusted/, rejected/), with a security policy")
	user := fs.String("username", "", "user name; anonymous when empty")
	pass := fs.String("password", "", "password")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if len(args) == 0 || args[0] != "browse" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fs.Usage()
			return nil
		}
		fmt.Fprintln(stderr, "usage: calx opcua browse [flags] <endpoint>")
		return shownError{errUsage}
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return shownError{fmt.Errorf("%w: %v", errUsage, err)}
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: calx opcua browse [flags] <endpoint>")
		return shownError{errUsage}
	}
	endpoint := fs.Arg(0)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	vars, err := opcua.Browse(ctx, opcua.Settings{Endpoint: endpoint, SecurityPolicy: *policy, SecurityMode: *mode,
		CertFile: *cert, KeyFile: *key, ServerCertFile: *serverCert, PKIDir: *pki, Username: *user, Password: *pass}, *depth)
	if err != nil {
		return err
	}
	opcua.WriteYAML(stdout, endpoint, vars)
	return nil
}
