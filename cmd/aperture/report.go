package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/report"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/witness"
	"github.com/aperture-gov/aperture/policies"
)

const reportUsage = `usage:
  aperture report --from DATE --to DATE [--tz ZONE] [--format md|json|csv | --json] [--out FILE] [--policies DIR] [--witness-policy FILE]
                        the data-responsibility report: per agency and journey, releases and refusals by
                        reason, fields and facts disclosed, covert accesses and those revealed (at their
                        hidden-until time, or early when the case closed or moved on), over-sharing
                        caught from authorities; computed from the access log over its newest signed
                        checkpoint (with --witness-policy: the newest one the witnesses cosigned), which the
                        report names (DATE: YYYY, YYYY-MM or YYYY-MM-DD, midnight in ZONE, or RFC 3339;
                        --to is exclusive; ZONE: an IANA time zone, default UTC, also APERTURE_REPORT_TZ
                        or the config key report-tz; "--from 2026 --to 2027 --tz Europe/Copenhagen" is
                        the Danish calendar year; the report states its zone and verify uses it)
  aperture report verify REPORT.json [--witness-policy FILE] [--json]
                        check the report's signed checkpoint, that the stored log matches it and every
                        checkpoint is consistent (as audit verify), recompute every figure from the log
                        up to that checkpoint, and fail naming each figure that differs

Both read the log's storage directly (NATS flags as for audit verify), trusting only the verifier key.
Put the JSON form in the portal's --reports directory to publish it on the public page /report.`

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "verify":
			return runReportVerify(ctx, args[1:], stdout, stderr)
		case "-h", "--help", "help":
			fmt.Fprintln(stdout, reportUsage)
			return nil
		}
	}
	return runReportMake(ctx, args, stdout, stderr)
}

// logAccess are the flags that reach the log's storage, as audit verify has them.
type logAccess struct {
	natsURL, natsCreds, natsNKey, natsCA, data, vkey, sealDir, witnessPolicy *string
}

func (l *logAccess) register(fs *flag.FlagSet) {
	addConfigFlag(fs)
	l.natsURL = fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server holding the access log")
	l.natsCreds = fs.String("nats-creds", "", "NATS credentials file")
	l.natsNKey = fs.String("nats-nkey", "", "NATS nkey seed file (default: the embedded server's, DATA/nats/broker.nk)")
	l.natsCA = fs.String("nats-ca", "", "CA file of the NATS server's TLS certificate (default DATA/pki/ca.crt)")
	l.data = fs.String("data", ".aperture", "data directory of `aperture dev`, for the verifier key")
	l.vkey = fs.String("vkey", "", "checkpoint verifier key file (default DATA/keys/"+tlog.VerifierKeyFile+")")
	l.witnessPolicy = fs.String("witness-policy", "", "witness policy file (witness, group, quorum lines): the report's checkpoint must be one the quorum cosigned")
	l.sealDir = fs.String("seal-key-dir", "", "directory of the broker's local data key ("+keys.SealKeyFile+"), to authenticate every ACCESS batch too (default DATA/keys when it holds one)")
}

// open loads the verifier keys and the data key and connects to NATS; close the connection after.
func (l *logAccess) open(name string) ([]tlog.Verifier, accesslog.Sealer, *nats.Conn, jetstream.JetStream, error) {
	v, err := verifierKey(*l.vkey, *l.data)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	sealer, err := auditSealer(*l.sealDir, *l.data)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	tool, err := newNATSTool(*l.data, *l.natsCreds, *l.natsNKey, *l.natsCA)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	nc, js, err := tool.connect(*l.natsURL, name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return v, sealer, nc, js, nil
}

// parseReportTime reads a report boundary in loc: a year, month or date (midnight in loc) or an
// RFC 3339 time.
func parseReportTime(flagName, s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, usagef("--%s is required\n%s", flagName, reportUsage)
	}
	t, err := report.ParseBoundary(s, loc)
	if err != nil {
		return time.Time{}, usagef("--%s %v", flagName, err)
	}
	return t, nil
}

// reportZone is the report's time zone: an IANA name, "" or "UTC" for UTC.
func reportZone(name string) (string, *time.Location, error) {
	if name == "" || name == "UTC" {
		return "", time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return "", nil, usagef("--tz %q: not a time zone this machine knows (want an IANA name such as Europe/Copenhagen): %v", name, err)
	}
	return name, loc, nil
}

func runReportMake(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var la logAccess
	la.register(fs)
	fromFlag := fs.String("from", "", "first day of the period (YYYY, YYYY-MM, YYYY-MM-DD in --tz) or RFC 3339 time")
	toFlag := fs.String("to", "", "end of the period, exclusive (YYYY, YYYY-MM, YYYY-MM-DD in --tz) or RFC 3339 time")
	var tz string
	fs.StringVar(&tz, "tz", "", "IANA time zone of the period's dates, stated in the report (default UTC)")
	fs.Var(fs.Lookup("tz").Value, "report-tz", "the same as --tz (environment APERTURE_REPORT_TZ)")
	format := fs.String("format", "md", "md (Markdown), json (the verifiable form) or csv")
	out := fs.String("out", "", "write the report to this file instead of standard output")
	policyDir := fs.String("policies", "", "policy tree the agency, authority and journey names are taken from (default: the built-in policies)")
	asJSON := fs.Bool("json", false, "print the JSON form (the same as --format json)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		*format = "json"
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q\n%s", pos[0], reportUsage)
	}
	if *format != "md" && *format != "json" && *format != "csv" {
		return usagef("--format %q: want md, json or csv", *format)
	}
	zone, loc, err := reportZone(tz)
	if err != nil {
		return err
	}
	from, err := parseReportTime("from", *fromFlag, loc)
	if err != nil {
		return err
	}
	to, err := parseReportTime("to", *toFlag, loc)
	if err != nil {
		return err
	}
	period := report.Period{From: from, To: to, TimeZone: zone}
	if err := period.Validate(); err != nil {
		return usagef("%v", err)
	}
	labels, err := reportLabels(*policyDir)
	if err != nil {
		return err
	}
	v, sealer, nc, js, err := la.open("aperture-report")
	if err != nil {
		return err
	}
	defer nc.Close()
	// With witnesses the report rests on the checkpoint they cosigned: what the public saw.
	var cosigned *tlog.Checkpoint
	opts := tlog.VerifyOptions{Verifiers: v, Sealer: sealer}
	if *la.witnessPolicy != "" {
		cp, note, err := cosignedCheckpoint(ctx, js, *la.witnessPolicy, v)
		if err != nil {
			return err
		}
		cosigned = &cp
		opts.Trusted = []tlog.TrustedCheckpoint{{Name: "the witness-cosigned checkpoint", Note: note}}
	}
	// The log is verified first, as audit verify does, so the report rests on a checkpoint whose
	// records, tiles and predecessors all check out.
	res, err := tlog.VerifyWith(ctx, js, opts)
	if err != nil {
		return fmt.Errorf("the access log does not verify, so no report is made over it: %w", err)
	}
	for _, f := range res.Forged {
		fmt.Fprintf(stderr, "ALERT: %v\n", f)
	}
	cp := res.Latest
	if cosigned != nil {
		cp = *cosigned
	}
	r, err := report.New(ctx, js, cp, period, sealer)
	if err != nil {
		return err
	}
	r.Labels = labels
	var buf bytes.Buffer
	switch *format {
	case "json":
		err = r.WriteJSON(&buf)
	case "csv":
		err = r.WriteCSV(&buf)
	default:
		err = r.WriteMarkdown(&buf)
	}
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(buf.Bytes())
		return err
	}
	// Written whole or not at all: a portal may be reading the directory.
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".report-*")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("report: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	fmt.Fprintf(stderr, "report of %s to %s (%s) over the checkpoint of size %d written to %s\n",
		r.Period.From.Format(time.RFC3339), r.Period.To.Format(time.RFC3339), cmp.Or(zone, "UTC"), r.Checkpoint.TreeSize, *out)
	return nil
}

// reportLabels names agencies, authorities and journeys from a policy tree (the built-in one when dir
// is empty).
func reportLabels(dir string) (*report.Labels, error) {
	var fsys fs.FS = policies.Files()
	if dir != "" {
		fsys = os.DirFS(dir)
	}
	b, err := loadPolicyTree(fsys, newCatalogDescriptors())
	if err != nil {
		return nil, fmt.Errorf("report: names from the policies: %w", err)
	}
	l := &report.Labels{Agencies: map[string]report.Text{}, Authorities: map[string]report.Text{}, Journeys: map[string]report.Text{}}
	for _, a := range b.Registry.Agencies {
		l.Agencies[a.ID] = report.Text{EN: a.Name.EN, DA: a.Name.DA}
	}
	for _, a := range b.Registry.Authorities {
		l.Authorities[a.ID] = report.Text{EN: a.Name.EN, DA: a.Name.DA}
	}
	for _, j := range b.Journeys() {
		l.Journeys[j.ID] = report.Text{EN: j.Title.EN, DA: j.Title.DA}
	}
	return l, nil
}

// reportVerification is what `report verify --json` prints.
type reportVerification struct {
	OK         bool     `json:"ok"`
	Error      string   `json:"error,omitempty"`
	Origin     string   `json:"origin,omitempty"`
	TreeSize   uint64   `json:"tree_size,omitempty"`
	Records    uint64   `json:"records,omitempty"`
	Figures    int      `json:"figures,omitempty"`
	Cosigners  []string `json:"cosigners,omitempty"`
	BatchesMAC bool     `json:"batches_authenticated"`
}

func runReportVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report verify", flag.ContinueOnError)
	var la logAccess
	la.register(fs)
	asJSON := fs.Bool("json", false, "print the result as one JSON object for machines (also when verification fails)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s", reportUsage)
	}
	if !*asJSON {
		return checkReport(ctx, la, pos[0], stdout, stderr, &reportVerification{})
	}
	var res reportVerification
	err = checkReport(ctx, la, pos[0], io.Discard, stderr, &res)
	res.OK = err == nil
	if err != nil {
		res.Error = err.Error()
	}
	if jerr := writeJSON(stdout, res); jerr != nil {
		return jerr
	}
	return err
}

// checkReport verifies the report in file against the log, writing its findings to stdout and what it
// checked to res.
func checkReport(ctx context.Context, la logAccess, file string, stdout, stderr io.Writer, res *reportVerification) error {
	pos := []string{file}
	f, err := os.Open(pos[0])
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	r, err := report.Decode(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w (only the JSON form can be verified)", pos[0], err)
	}
	v, sealer, nc, js, err := la.open("aperture-report-verify")
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := r.OpenCheckpoint(v); err != nil {
		return fmt.Errorf("verification FAILED: %w", err)
	}
	if *la.witnessPolicy != "" {
		pol, err := loadWitnessPolicy(*la.witnessPolicy, v)
		if err != nil {
			return err
		}
		c, err := pol.Open([]byte(r.Checkpoint.Note))
		if err != nil {
			return fmt.Errorf("verification FAILED: the report's checkpoint is not cosigned as the witness policy asks: %w", err)
		}
		res.Cosigners = c.Cosigners
		fmt.Fprintf(stdout, "OK: the report's checkpoint is cosigned by %s\n", strings.Join(c.Cosigners, ", "))
	}
	// The stored log must produce the report's checkpoint, and every stored checkpoint must be
	// consistent with the others: the report's checkpoint is a trusted target, as a saved one is for
	// audit verify.
	vres, err := tlog.VerifyWith(ctx, js, tlog.VerifyOptions{Verifiers: v, Sealer: sealer,
		Trusted: []tlog.TrustedCheckpoint{{Name: "of the report", Note: []byte(r.Checkpoint.Note)}}})
	if err != nil {
		return fmt.Errorf("verification FAILED: %w", err)
	}
	res.Origin, res.TreeSize, res.Records, res.BatchesMAC = r.Checkpoint.Origin, r.Checkpoint.TreeSize, vres.Records, sealer != nil
	for _, f := range vres.Forged {
		fmt.Fprintf(stderr, "ALERT: %v\n", f)
	}
	fmt.Fprintf(stdout, "OK: the report's checkpoint (origin %s, size %d, root %s) is signed by the log's key, and the log's %d records match it and %s\n",
		r.Checkpoint.Origin, r.Checkpoint.TreeSize, r.Checkpoint.RootHash, vres.Records, plural(vres.Checkpoints, "stored signed checkpoint"))
	fig, err := r.Recompute(ctx, js, v, sealer)
	var me *report.MismatchError
	if errors.As(err, &me) {
		return fmt.Errorf("verification FAILED: %d figure(s) of the report differ from the log:\n  %s", len(me.Differences), strings.Join(me.Differences, "\n  "))
	}
	if err != nil {
		return fmt.Errorf("verification FAILED: %w", err)
	}
	res.Figures = len(fig.Cells())
	fmt.Fprintf(stdout, "OK: all %d figures recomputed from the first %d records of the log (%s to %s, time zone %s) equal the report's\n",
		len(fig.Cells()), r.Checkpoint.TreeSize, r.Period.From.Format(time.RFC3339), r.Period.To.Format(time.RFC3339), cmp.Or(r.Period.TimeZone, "UTC"))
	if sealer == nil {
		fmt.Fprintln(stdout, "note: without the broker's data key (--seal-key-dir) the batches' MACs were not checked; the signed root was")
	}
	return nil
}

// cosignedCheckpoint reads the stored witness-cosigned checkpoint, checks it meets the witness policy
// and carries the log's signature, and returns it with its note (log and witness signatures).
func cosignedCheckpoint(ctx context.Context, js jetstream.JetStream, policyFile string, v []tlog.Verifier) (tlog.Checkpoint, []byte, error) {
	pol, err := loadWitnessPolicy(policyFile, v)
	if err != nil {
		return tlog.Checkpoint{}, nil, err
	}
	b, err := witness.ReadCosigned(ctx, js)
	if errors.Is(err, witness.ErrNotFound) {
		return tlog.Checkpoint{}, nil, fmt.Errorf("no checkpoint is cosigned by the witnesses (%s) yet", pol.Describe())
	}
	if err != nil {
		return tlog.Checkpoint{}, nil, err
	}
	if _, err := pol.Open(b); err != nil {
		return tlog.Checkpoint{}, nil, fmt.Errorf("the stored cosigned checkpoint does not meet the witness policy: %w", err)
	}
	cp, err := tlog.OpenCheckpoint(b, v[0], v[1:]...)
	if err != nil {
		return tlog.Checkpoint{}, nil, fmt.Errorf("the cosigned checkpoint: %w", err)
	}
	return cp, b, nil
}
