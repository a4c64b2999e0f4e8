package portal

import (
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// proofPage is the data of the page that checks one access against the public log.
type proofPage struct {
	AccessID string
	// State is "ok" (the portal verified the proof), "pending" (not in a cosigned checkpoint yet),
	// "failed" (the proof did not verify here) or "off" (no witnessed log is configured).
	State                string
	Cosigners, Witnesses int
	Quorum               int
	TreeSize, LeafIndex  uint64
	Checkpoint           string
}

// accessProof asks the broker for the inclusion proof of one of the citizen's accesses and verifies it
// again here, with the portal's own copy of the witness policy and the log's key: the page says
// "verified" only if the portal itself checked the cosignatures and the proof.
func (p *Portal) accessProof(w http.ResponseWriter, r *http.Request, v *view) {
	id := r.PathValue("id")
	if !accessIDPattern.MatchString(id) {
		p.notFound(w, r, v)
		return
	}
	v.Nav, v.Title = "timeline", v.T("proof.title")
	page := proofPage{AccessID: id}
	resp, err := p.cfg.Citizen.GetAccessProof(v.ctx(r), &citizenv1.GetAccessProofRequest{AccessId: id})
	switch {
	case isCode(err, codes.Unavailable) && p.cfg.Witnesses == nil:
		page.State = "off"
	case isCode(err, codes.Unavailable):
		page.State = "pending"
	case err != nil:
		p.fail(w, r, v, err)
		return
	case p.cfg.Witnesses == nil:
		page.State = "off"
	default:
		page.State = "failed"
		var rec auditv1.AccessRecord
		cp, verr := p.cfg.Witnesses.VerifyInclusion(resp.GetCheckpoint(), resp.GetLeaf(), resp.GetLeafIndex(), resp.GetInclusionProof())
		if verr == nil && proto.Unmarshal(resp.GetLeaf(), &rec) == nil && rec.GetId() == id {
			k, n := p.cfg.Witnesses.Quorum()
			page.State, page.Cosigners, page.Quorum, page.Witnesses = "ok", len(cp.Cosigners), k, n
			page.TreeSize, page.LeafIndex, page.Checkpoint = cp.Size, resp.GetLeafIndex(), string(resp.GetCheckpoint())
		} else {
			// No citizen data in the line: the route and the failed check only.
			p.log.Error("portal: an access proof from the broker does not verify", "route", r.Pattern, "err", verr)
		}
	}
	v.Data = page
	code := http.StatusOK
	if page.State == "failed" {
		code = http.StatusBadGateway
	}
	p.render(w, r, v, code, "proof")
}
