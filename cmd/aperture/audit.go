package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

const auditUsage = `usage:
  aperture audit verify [--nats-url URL] [--vkey FILE]
                        recompute the access log's Merkle tree from the stored records and check it
                        against every signed checkpoint
  aperture audit prove ACCESS_ID [--vkey FILE] [--json]
                        fetch, print and verify the inclusion proof of one access record`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("%s", auditUsage)
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "prove":
		return runAuditProve(ctx, args[1:], stdout, stderr)
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
func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	addConfigFlag(fs)
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server holding the access log")
	natsCreds := fs.String("nats-creds", "", "NATS credentials file")
	natsNKey := fs.String("nats-nkey", "", "NATS nkey seed file (default: the embedded server's, DATA/nats/broker.nk)")
	natsCA := fs.String("nats-ca", "", "CA file of the NATS server's TLS certificate (default DATA/pki/ca.crt)")
	data := fs.String("data", ".aperture", "data directory of `aperture dev`, for the verifier key")
	vkey := fs.String("vkey", "", "checkpoint verifier key file (default DATA/keys/"+tlog.VerifierKeyFile+")")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("%s", auditUsage)
	}
	v, err := verifierKey(*vkey, *data)
	if err != nil {
		return err
	}
	nopts, err := natsToolOptions(*data, *natsCreds, *natsNKey, *natsCA)
	if err != nil {
		return err
	}
	nc, js, err := connectJetStream(*natsURL, append(nopts, nats.Name("aperture-audit-verify"))...)
	if err != nil {
		return err
	}
	defer nc.Close()
	res, err := tlog.Verify(ctx, js, v[0], v[1:]...)
	if err != nil {
		return fmt.Errorf("verification FAILED: %w", err)
	}
	fmt.Fprintf(stdout, "OK: %d access records match %d signed checkpoints; consecutive checkpoints are consistent\n", res.Records, res.Checkpoints)
	fmt.Fprintf(stdout, "latest checkpoint (%d):\n%s", res.Latest.Seq, res.Latest.Note)
	return nil
}

func runAuditProve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit prove", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs, "auditor", "dpo")
	vkey := fs.String("vkey", "", "checkpoint verifier key file (default DATA/keys/"+tlog.VerifierKeyFile+")")
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
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := cf.callContext(ctx)
	defer cancel()
	resp, err := auditv1.NewAuditServiceClient(cc).GetInclusionProof(ctx, &auditv1.GetInclusionProofRequest{
		Leaf: &auditv1.GetInclusionProofRequest_AccessId{AccessId: id},
	})
	if err != nil {
		return refused(err)
	}
	if err := checkInclusion(resp, v); err != nil {
		return fmt.Errorf("access %s: %w", id, err)
	}
	if cf.json {
		return printJSON(stdout, resp)
	}
	cp, _ := tlog.OpenCheckpoint(resp.GetCheckpoint(), v[0], v[1:]...)
	fmt.Fprintf(stdout, "access %s is leaf %d of the tree of size %d\n", id, resp.GetLeafIndex(), resp.GetTreeSize())
	fmt.Fprintf(stdout, "leaf hash  %x\n", resp.GetLeafHash())
	fmt.Fprintf(stdout, "audit path (%d hashes, leaf to root):\n", len(resp.GetHashes()))
	for i, h := range resp.GetHashes() {
		fmt.Fprintf(stdout, "  %2d  %x\n", i, h)
	}
	fmt.Fprintf(stdout, "root       %x (%s)\n", cp.Root, base64.StdEncoding.EncodeToString(cp.Root))
	fmt.Fprintf(stdout, "signed checkpoint:\n%s", resp.GetCheckpoint())
	fmt.Fprintln(stdout, "OK: the record is included in the signed checkpoint")
	return nil
}

// checkInclusion verifies the proof as an outside party would: the checkpoint's signature with the
// verifier key, the leaf hash recomputed from the record, the audit path against the signed root.
func checkInclusion(resp *auditv1.GetInclusionProofResponse, v []tlog.Verifier) error {
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
