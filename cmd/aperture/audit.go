package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/witness"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

const auditUsage = `usage:
  aperture audit verify [--nats-url URL] [--vkey FILE] [--trusted-checkpoint FILE]
                        recompute the access log's Merkle tree from the stored records and check it
                        against every signed checkpoint and the checkpoint trusted before
  aperture audit prove ACCESS_ID [--vkey FILE] [--trusted-checkpoint FILE] [--json]
                        fetch, print and verify the inclusion proof of one access record, and that the
                        log extends the checkpoint trusted before
  aperture audit review list [--all] [--json]
                        the break-glass (emergency) releases waiting for an auditor's review
  aperture audit review close ACCESS_ID --outcome justified|not-justified --note TEXT
                        close one review; the outcome is written to the citizen's access log

Both keep the newest checkpoint they accepted in the trusted-checkpoint file (default: one per log
origin under the user's config directory) and from then on fail on a log that does not extend it.`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("%s", auditUsage)
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "prove":
		return runAuditProve(ctx, args[1:], stdout, stderr)
	case "review":
		return runAuditReview(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, auditUsage)
		return nil
	}
	return usagef("unknown subcommand %q\n%s", args[0], auditUsage)
}

// verifierKey loads the checkpoint verifier key file, by default the one the broker wrote into the
// dev data directory: the current key first, then earlier versions after a rotation.
func verifierKey(vkey, data string) ([]tlog.Verifier, error) {
	if vkey == "" {
		vkey = filepath.Join(data, "keys", tlog.VerifierKeyFile)
	}
	return tlog.LoadVerifiers(vkey)
}

// runAuditVerify reads the storage directly, not through the broker: the point is to check what
// is stored, trusting only the verifier key.
func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	addConfigFlag(fs)
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server holding the access log")
	natsCreds := fs.String("nats-creds", "", "NATS credentials file")
	natsNKey := fs.String("nats-nkey", "", "NATS nkey seed file (default: the embedded server's, DATA/nats/broker.nk)")
	natsCA := fs.String("nats-ca", "", "CA file of the NATS server's TLS certificate (default DATA/pki/ca.crt)")
	data := fs.String("data", ".aperture", "data directory of `aperture dev`, for the verifier key")
	vkey := fs.String("vkey", "", "checkpoint verifier key file (default DATA/keys/"+tlog.VerifierKeyFile+")")
	trustedFlag := fs.String("trusted-checkpoint", "", "file with the newest checkpoint accepted before (default: under the user's config directory, per log origin)")
	policyFlag := fs.String("witness-policy", "", "witness policy file (witness, group, quorum lines): the log must match a checkpoint cosigned by the quorum")
	sealDir := fs.String("seal-key-dir", "", "directory of the broker's local data key ("+keys.SealKeyFile+"), to check every ACCESS batch's MAC and the per-citizen index against the log (default DATA/keys when it holds one)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object for machines (also when verification fails)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("%s", auditUsage)
	}
	var report verifyReport
	if *asJSON {
		out := stdout
		stdout = io.Discard
		defer func() {
			report.OK = err == nil
			if err != nil {
				report.Error = err.Error()
			}
			b, merr := json.MarshalIndent(report, "", "  ")
			if merr != nil {
				err = errors.Join(err, merr)
				return
			}
			fmt.Fprintf(out, "%s\n", b)
		}()
	}
	v, err := verifierKey(*vkey, *data)
	if err != nil {
		return err
	}
	tr, err := openTrusted(*trustedFlag, v)
	if err != nil {
		return err
	}
	tool, err := newNATSTool(*data, *natsCreds, *natsNKey, *natsCA)
	if err != nil {
		return err
	}
	nc, js, err := tool.connect(*natsURL, "aperture-audit-verify")
	if err != nil {
		return err
	}
	defer nc.Close()
	opts := tlog.VerifyOptions{Verifiers: v}
	if tr.cp != nil {
		opts.Trusted = []tlog.TrustedCheckpoint{{Name: tr.path, Note: tr.cp.Note}}
	}
	sealer, err := auditSealer(*sealDir, *data)
	if err != nil {
		return err
	}
	if sealer != nil {
		opts.Sealer = sealer
	}
	var witnessed *witness.Cosigned
	if *policyFlag != "" {
		pol, err := loadWitnessPolicy(*policyFlag, v)
		if err != nil {
			return err
		}
		b, err := witness.ReadCosigned(ctx, js)
		if errors.Is(err, witness.ErrNotFound) {
			return fmt.Errorf("verification FAILED: no checkpoint is cosigned by the witnesses (%s) yet", pol.Describe())
		}
		if err != nil {
			return err
		}
		c, err := pol.Open(b)
		if err != nil {
			return fmt.Errorf("verification FAILED: the stored cosigned checkpoint does not meet the witness policy: %w", err)
		}
		witnessed = &c
		// The recomputed tree must have the witnessed root at the witnessed size.
		opts.Trusted = append(opts.Trusted, tlog.TrustedCheckpoint{Name: "the witness-cosigned checkpoint", Note: b})
	}
	res, err := tlog.VerifyWith(ctx, js, opts)
	if err != nil {
		return fmt.Errorf("verification FAILED: %w", err)
	}
	report.Records, report.Checkpoints, report.IndexChecked = res.Records, res.Checkpoints, sealer != nil
	report.Latest = &verifiedCheckpoint{Size: res.Latest.Size, Root: fmt.Sprintf("%x", res.Latest.Root), Note: string(res.Latest.Note)}
	for _, f := range res.Forged {
		report.Forged = append(report.Forged, fmt.Sprint(f))
		fmt.Fprintf(stderr, "ALERT: %v (if the key was rotated, list the earlier verifier keys in the key file)\n", f)
	}
	fmt.Fprintf(stdout, "OK: %d access records match %d signed checkpoints; consecutive checkpoints are consistent\n", res.Records, res.Checkpoints)
	if sealer == nil {
		fmt.Fprintln(stdout, "note: without the broker's data key (--seal-key-dir) the batches' MACs and the per-citizen index were not checked")
	} else {
		if err := verifyIndex(ctx, js, sealer, stdout); err != nil {
			return err
		}
	}
	if witnessed != nil {
		report.Witnessed = &witnessedCheckpoint{Size: witnessed.Size, Cosigners: witnessed.Cosigners}
		fmt.Fprintf(stdout, "OK: the log extends the checkpoint of size %d cosigned by %s\n", witnessed.Size, strings.Join(witnessed.Cosigners, ", "))
	}
	report.Trusted = tr.path
	if err := tr.accept(stdout, res.Latest); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "latest checkpoint (%d):\n%s", res.Latest.Seq, res.Latest.Note)
	return nil
}

// verifyReport is `audit verify --json`: what was checked and found.
type verifyReport struct {
	OK bool `json:"ok"`
	// Error is why verification failed; empty when OK.
	Error       string `json:"error,omitempty"`
	Records     uint64 `json:"records"`
	Checkpoints int    `json:"checkpoints"`
	// IndexChecked: the batches' MACs and the per-citizen index were checked (the data key was given).
	IndexChecked bool                 `json:"index_checked"`
	Forged       []string             `json:"forged,omitempty"`
	Witnessed    *witnessedCheckpoint `json:"witnessed,omitempty"`
	Trusted      string               `json:"trusted_checkpoint_file,omitempty"`
	Latest       *verifiedCheckpoint  `json:"latest,omitempty"`
}

type witnessedCheckpoint struct {
	Size      uint64   `json:"size"`
	Cosigners []string `json:"cosigners"`
}

type verifiedCheckpoint struct {
	Size uint64 `json:"size"`
	Root string `json:"root_hex"`
	Note string `json:"note"`
}

// trusted is the verifier's own memory of the log, as Go's checksum database client keeps one: the
// newest checkpoint it accepted. A log that does not extend it fails verification whatever the
// log's storage says, which a rewrite of the whole storage cannot get around.
type trusted struct {
	path string
	cp   *tlog.Checkpoint // nil: nothing trusted yet (trust on first use)
}

// openTrusted loads the trusted checkpoint from path, by default a file per log origin under the
// user's config directory.
func openTrusted(path string, v []tlog.Verifier) (*trusted, error) {
	if path == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, fmt.Errorf("no place for the trusted checkpoint (set --trusted-checkpoint): %w", err)
		}
		name := strings.NewReplacer("/", "_", "\\", "_", ":", "_").Replace(v[0].Name())
		path = filepath.Join(dir, "aperture", "checkpoints", name)
	}
	tr := &trusted{path: path}
	b, err := tlog.FileAnchor(path)(context.Background())
	if err != nil {
		return nil, fmt.Errorf("trusted checkpoint %s: %w", path, err)
	}
	if b == nil {
		return tr, nil
	}
	cp, err := tlog.OpenCheckpoint(b, v[0], v[1:]...)
	if err != nil {
		return nil, fmt.Errorf("trusted checkpoint %s: %w", path, err)
	}
	tr.cp = &cp
	return tr, nil
}

// accept saves cp as the trusted checkpoint if it is newer; the caller has verified that the log
// extends the trusted one.
func (tr *trusted) accept(w io.Writer, cp tlog.Checkpoint) error {
	switch {
	case tr.cp == nil:
		fmt.Fprintf(w, "trusting the checkpoint of size %d on first use; saved to %s\n", cp.Size, tr.path)
	case cp.Size > tr.cp.Size:
		fmt.Fprintf(w, "consistent with the trusted checkpoint of size %d; now trusting size %d (%s)\n", tr.cp.Size, cp.Size, tr.path)
	default:
		fmt.Fprintf(w, "consistent with the trusted checkpoint of size %d (%s)\n", tr.cp.Size, tr.path)
		return nil
	}
	if err := tlog.WriteCheckpointFile(tr.path, cp.Note); err != nil {
		return fmt.Errorf("save the trusted checkpoint: %w", err)
	}
	tr.cp = &cp
	return nil
}

// checkTrusted proves that the checkpoint cp extends the trusted one with a consistency proof from
// the audit API, verified here.
func (tr *trusted) checkTrusted(ctx context.Context, audit auditv1.AuditServiceClient, cp tlog.Checkpoint) error {
	if tr.cp == nil {
		return nil
	}
	old := *tr.cp
	fail := func(why string, args ...any) error {
		return fmt.Errorf("the log is NOT consistent with the trusted checkpoint %s (size %d, root %x): %s",
			tr.path, old.Size, old.Root, fmt.Sprintf(why, args...))
	}
	switch {
	case old.Size > cp.Size:
		return fail("the broker's checkpoint has only size %d: the log was rolled back", cp.Size)
	case old.Size == cp.Size:
		if string(old.Root) != string(cp.Root) {
			return fail("the broker's checkpoint of the same size has root %x: a split view", cp.Root)
		}
		return nil
	}
	resp, err := audit.GetConsistencyProof(ctx, &auditv1.GetConsistencyProofRequest{FromSize: old.Size, ToSize: cp.Size})
	if err != nil {
		return fail("no consistency proof to size %d: %v", cp.Size, refused(err))
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cp.Size, resp.GetHashes(), old.Root, cp.Root); err != nil {
		return fail("the consistency proof to size %d does not verify: %v", cp.Size, err)
	}
	return nil
}

func runAuditProve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit prove", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs, "auditor", "dpo")
	vkey := fs.String("vkey", "", "checkpoint verifier key file (default DATA/keys/"+tlog.VerifierKeyFile+")")
	trustedFlag := fs.String("trusted-checkpoint", "", "file with the newest checkpoint accepted before (default: under the user's config directory, per log origin)")
	policyFlag := fs.String("witness-policy", "", "witness policy file (witness, group, quorum lines): also prove the record in a checkpoint cosigned by the quorum")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s", auditUsage)
	}
	id := pos[0]
	v, err := verifierKey(*vkey, cf.data)
	if err != nil {
		return err
	}
	tr, err := openTrusted(*trustedFlag, v)
	if err != nil {
		return err
	}
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := cf.callContext(ctx)
	defer cancel()
	audit := auditv1.NewAuditServiceClient(cc)
	resp, err := audit.GetInclusionProof(ctx, &auditv1.GetInclusionProofRequest{
		Leaf: &auditv1.GetInclusionProofRequest_AccessId{AccessId: id},
	})
	if err != nil {
		return refused(err)
	}
	if err := checkInclusion(resp, id, v); err != nil {
		return fmt.Errorf("access %s: %w", id, err)
	}
	cp, _ := tlog.OpenCheckpoint(resp.GetCheckpoint(), v[0], v[1:]...)
	if err := tr.checkTrusted(ctx, audit, cp); err != nil {
		return err
	}
	status := io.Discard
	if !cf.json {
		status = stdout
	}
	if err := tr.accept(status, cp); err != nil {
		return err
	}
	var witnessed *witness.Cosigned
	if *policyFlag != "" {
		pol, err := loadWitnessPolicy(*policyFlag, v)
		if err != nil {
			return err
		}
		if witnessed, err = proveWitnessed(ctx, audit, pol, id, resp); err != nil {
			return fmt.Errorf("access %s: %w", id, err)
		}
	}
	if cf.json {
		return printJSON(stdout, resp)
	}
	fmt.Fprintf(stdout, "access %s is leaf %d of the tree of size %d\n", id, resp.GetLeafIndex(), resp.GetTreeSize())
	fmt.Fprintf(stdout, "leaf hash  %x\n", resp.GetLeafHash())
	fmt.Fprintf(stdout, "audit path (%d hashes, leaf to root):\n", len(resp.GetHashes()))
	for i, h := range resp.GetHashes() {
		fmt.Fprintf(stdout, "  %2d  %x\n", i, h)
	}
	fmt.Fprintf(stdout, "root       %x (%s)\n", cp.Root, base64.StdEncoding.EncodeToString(cp.Root))
	fmt.Fprintf(stdout, "signed checkpoint:\n%s", resp.GetCheckpoint())
	fmt.Fprintln(stdout, "OK: the record is included in the signed checkpoint")
	if witnessed != nil {
		fmt.Fprintf(stdout, "OK: the record is included in the checkpoint of size %d cosigned by %s\n", witnessed.Size, strings.Join(witnessed.Cosigners, ", "))
	}
	return nil
}

// loadWitnessPolicy reads a witness policy and adds the log's checkpoint keys to it.
func loadWitnessPolicy(path string, v []tlog.Verifier) (*witness.Policy, error) {
	pol, err := witness.LoadPolicy(path)
	if err != nil {
		return nil, fmt.Errorf("witness policy: %w", err)
	}
	return pol.WithLog(v...), nil
}

// proveWitnessed proves the record of resp (already checked to be the access asked for) in the newest
// checkpoint the policy's witnesses cosigned: what the witnesses saw, not only what the broker signed.
func proveWitnessed(ctx context.Context, audit auditv1.AuditServiceClient, pol *witness.Policy, id string, resp *auditv1.GetInclusionProofResponse) (*witness.Cosigned, error) {
	cpr, err := audit.GetCheckpoint(ctx, &auditv1.GetCheckpointRequest{})
	if err != nil {
		return nil, refused(err)
	}
	b := cpr.GetCosignedCheckpoint()
	if len(b) == 0 {
		return nil, fmt.Errorf("the broker has no checkpoint cosigned by the witnesses (%s) yet", pol.Describe())
	}
	c, err := pol.Open(b)
	if err != nil {
		return nil, fmt.Errorf("the cosigned checkpoint does not meet the witness policy: %w", err)
	}
	if resp.GetLeafIndex() >= c.Size {
		return nil, fmt.Errorf("leaf %d is not yet in a witnessed checkpoint (the newest has size %d); try again in a few seconds", resp.GetLeafIndex(), c.Size)
	}
	wp, err := audit.GetInclusionProof(ctx, &auditv1.GetInclusionProofRequest{
		Leaf: &auditv1.GetInclusionProofRequest_LeafIndex{LeafIndex: resp.GetLeafIndex()}, TreeSize: c.Size,
	})
	if err != nil {
		return nil, refused(err)
	}
	if _, err := pol.VerifyInclusion(b, resp.GetRecord(), resp.GetLeafIndex(), wp.GetHashes()); err != nil {
		return nil, fmt.Errorf("leaf %d is NOT proven in the witnessed checkpoint of size %d: %w", resp.GetLeafIndex(), c.Size, err)
	}
	return &c, nil
}

// checkInclusion verifies the proof as an outside party would: the record is the one asked for
// (wantID), the checkpoint's signature with the verifier key, the leaf hash recomputed from the
// record, the audit path against the signed root.
func checkInclusion(resp *auditv1.GetInclusionProofResponse, wantID string, v []tlog.Verifier) error {
	var rec auditv1.AccessRecord
	if err := proto.Unmarshal(resp.GetRecord(), &rec); err != nil {
		return fmt.Errorf("leaf %d: the record does not decode: %w", resp.GetLeafIndex(), err)
	}
	if rec.GetId() != wantID {
		return fmt.Errorf("leaf %d is the record %q, not the one asked for: the broker proved another record", resp.GetLeafIndex(), rec.GetId())
	}
	cp, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), v[0], v[1:]...)
	if err != nil {
		return err
	}
	if cp.Size != resp.GetTreeSize() {
		return fmt.Errorf("proof is for tree size %d but the checkpoint has size %d", resp.GetTreeSize(), cp.Size)
	}
	h := rfc6962.DefaultHasher
	leafHash := h.HashLeaf(resp.GetRecord())
	if string(leafHash) != string(resp.GetLeafHash()) {
		return fmt.Errorf("leaf %d: the record hashes to %x, not to the leaf hash %x the broker sent", resp.GetLeafIndex(), leafHash, resp.GetLeafHash())
	}
	if err := proof.VerifyInclusion(h, resp.GetLeafIndex(), cp.Size, leafHash, resp.GetHashes(), cp.Root); err != nil {
		return fmt.Errorf("leaf %d is NOT proven in checkpoint of size %d: %w", resp.GetLeafIndex(), cp.Size, err)
	}
	return nil
}

// auditSealer loads the broker's local data key from dir, or from DATA/keys when dir is empty and
// that holds one; nil when there is none to load (an auditor without the key).
func auditSealer(dir, data string) (accesslog.Sealer, error) {
	explicit := dir != ""
	if !explicit {
		dir = filepath.Join(data, "keys")
	}
	s, err := keys.OpenLocalSealer(dir)
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return nil, nil
	default:
		return nil, fmt.Errorf("the broker's data key: %w", err)
	}
}

// verifyIndex checks the per-citizen index (what citizens and auditors are shown) against the log:
// every leaf listed exactly once, every listed entry equal to its leaf. It names each difference.
func verifyIndex(ctx context.Context, js jetstream.JetStream, sealer accesslog.Sealer, stdout io.Writer) error {
	l, err := accesslog.OpenReader(ctx, js, accesslog.Options{Sealer: sealer})
	if err != nil {
		return fmt.Errorf("open the access log index: %w", err)
	}
	defer l.Close()
	rep, err := l.VerifyIndex(ctx)
	if err != nil {
		return fmt.Errorf("verification FAILED: check the per-citizen index: %w", err)
	}
	if !rep.OK() {
		var b strings.Builder
		for _, seq := range rep.UnauthenticBatches {
			fmt.Fprintf(&b, "\n  ACCESS message %d is not authenticated by the broker", seq)
		}
		for _, d := range rep.Differences {
			fmt.Fprintf(&b, "\n  %s", d)
		}
		if rep.Unlisted > 0 {
			fmt.Fprintf(&b, "\n  … and %d more", rep.Unlisted)
		}
		return fmt.Errorf("verification FAILED: the per-citizen index does not match the log (what citizens are shown differs from the tree):%s", b.String())
	}
	fmt.Fprintf(stdout, "OK: every batch is authenticated by the broker; the per-citizen index lists each of the %d leaves exactly once, as logged\n", rep.Leaves)
	return nil
}
