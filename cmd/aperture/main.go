// Command aperture is the one binary of Aperture: the dev stack, the broker, an authority service, the
// caseworker CLI, the audit CLI and the benchmark.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	// The zone database in the binary: a report's time zone (aperture report --tz) resolves on a
	// machine without /usr/share/zoneinfo, such as a distroless container.
	_ "time/tzdata"
)

const usage = `aperture — cross-agency citizen-journey broker with minimal disclosure

Usage:
  aperture dev                       run everything in one process (embedded NATS, broker, example authorities), with demo data
  aperture broker                    run the broker
  aperture authority NAME            run one example authority service
  aperture case open|show|list|explain|release|complete|close
                                     act as a demo agency's case system
  aperture citizen switches|consents|log --citizen CPR
                                     act as a demo citizen of the dev stack: switch-offs, consents, own access log
  aperture log --citizen ID          list a citizen's access records (as auditor)
  aperture audit verify|prove ID     verify the access log against its signed checkpoints; prove one access is in it
  aperture bench [--json]            direct authority fetches versus brokered, audited releases
  aperture policy lint|test|explain  check, test and explain the policy files (no running services needed)
  aperture new authority NAME        scaffold an authority: proto, kit-based service, catalog, registry entry, policy test
  aperture witness keygen|serve      run a witness that cosigns the access log's checkpoints (C2SP tlog-witness)
  aperture report [verify]           the yearly data-responsibility report from the access log, and its verification

Every command takes -h. Flags can also be set as APERTURE_<FLAG> environment variables (dashes become
underscores) or in a YAML file named by --config; a flag on the command line wins, then the environment,
then the file.
`

type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	commands := map[string]command{
		"dev":       runDev,
		"broker":    runBroker,
		"authority": runAuthority,
		"case":      runCase,
		"citizen":   runCitizen,
		"log":       runLog,
		"audit":     runAudit,
		"bench":     runBench,
		"policy":    runPolicy,
		"new":       runNew,
		"witness":   runWitness,
		"report":    runReport,
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "aperture: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "aperture %s: %v\n", args[0], err)
			return 2
		}
		fmt.Fprintf(stderr, "aperture %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// usageError is a mistake in the command line (exit status 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }
