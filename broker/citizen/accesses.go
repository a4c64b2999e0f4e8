package citizen

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/delegation"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

const (
	// defaultPageSize and maxPageSize bound the pages of the citizen API.
	defaultPageSize = 50
	// maxScan bounds the access records one ListAccesses call reads while filtering: a selective
	// filter over a long history answers with fewer matches (possibly none) and a token to go on,
	// rather than reading the whole history in one call.
	maxScan = 10_000
	// scanChunk is the access log page read while filtering.
	scanChunk = 500
	// clockSlack is how far out of time order records may be in the log (decisions on concurrent
	// requests, replicas' clocks): a "since" filter stops this much past its time.
	clockSlack = time.Minute
)

// ListAccesses implements CitizenService: the citizen's accesses, newest first, filtered while paging.
//
// On someone's behalf (on_behalf_of), it lists that citizen's accesses of the journeys the power of
// attorney reaches, without fact answers, and logs the look in their access log first.
func (s *Service) ListAccesses(ctx context.Context, req *citizenv1.ListAccessesRequest) (*citizenv1.ListAccessesResponse, error) {
	c, err := s.actFor(ctx, req.GetOnBehalfOf(), delegation.SeeAccesses, req.GetJourney())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	f := filter{authority: req.GetAuthority(), journey: req.GetJourney(), excludeSelf: req.GetExcludeSelf()}
	if req.GetSince() != nil {
		f.since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		f.until = req.GetUntil().AsTime()
	}
	if !f.since.IsZero() && !f.until.IsZero() && !f.until.After(f.since) {
		return nil, refusal.New(refusal.InvalidArgument, "until must be after since")
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultPageSize
	}
	chunk := size
	if f != (filter{}) {
		chunk = scanChunk
	}
	cv := s.covertView(now)
	entries, next, err := s.scanAccesses(ctx, c.Pseudonym.Value, size, chunk, req.GetPageToken(), func(r *auditv1.AccessRecord) verdict {
		if cv.hidden(ctx, r) || !c.sees(r.GetJourney()) {
			return skip
		}
		return f.match(r)
	})
	if err != nil {
		return nil, err
	}
	if err := s.logDelegate(ctx, c, delegation.SeeAccesses, "", req.GetJourney()); err != nil {
		return nil, err
	}
	n := names{s.cfg.Policies()}
	resp := &citizenv1.ListAccessesResponse{NextPageToken: next}
	for _, e := range entries {
		a := n.leafAccess(e)
		if c.d == nil {
			s.addAnswers(ctx, n, c.Pseudonym.Value, e.Record, a)
		}
		resp.Accesses = append(resp.Accesses, a)
	}
	return resp, nil
}

type verdict int

const (
	skip verdict = iota
	take
	// done: this record and every older one fail the filter (older than "since").
	done
)

type filter struct {
	authority, journey string
	since, until       time.Time
	excludeSelf        bool
}

func (f filter) match(r *auditv1.AccessRecord) verdict {
	t := r.GetTime().AsTime()
	switch {
	case !f.since.IsZero() && t.Before(f.since.Add(-clockSlack)):
		return done
	case !f.since.IsZero() && t.Before(f.since):
		return skip
	case !f.until.IsZero() && !t.Before(f.until):
		return skip
	case f.authority != "" && r.GetAuthority() != f.authority:
		return skip
	case f.journey != "" && r.GetJourney() != f.journey:
		return skip
	case f.excludeSelf && r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF:
		return skip
	}
	return take
}

// cursor is a position in a citizen's access list: the access log page (token and size) being read and
// how many of its records were already looked at. Log pages read with a token are stable (records
// appended meanwhile appear only on a new first page), so a cursor can resume in the middle of one.
type cursor struct {
	logToken string
	size     int
	skip     int
}

func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte("c1." + strconv.Itoa(c.size) + "." + strconv.Itoa(c.skip) + "." + c.logToken))
}

func decodeCursor(tok string) (cursor, error) {
	bad := refusal.New(refusal.InvalidArgument, "page_token is not a token this API returned")
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return cursor{}, bad
	}
	parts := strings.SplitN(string(b), ".", 4)
	if len(parts) != 4 || parts[0] != "c1" || parts[3] == "" {
		return cursor{}, bad
	}
	size, err1 := strconv.Atoi(parts[1])
	skipped, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || size < 1 || size > accesslog.MaxPageSize || skipped < 0 || skipped >= size {
		return cursor{}, bad
	}
	return cursor{logToken: parts[3], size: size, skip: skipped}, nil
}

// scanAccesses reads the citizen's records newest first from the position token names, keeping those
// keep takes, until it has want of them, the list ends, keep says done, or maxScan records were read;
// it returns a token for the position after the last record read ("" at the end).
//
// chunk is the log page size read after the first page: the page size when (nearly) every record is
// taken, larger for a selective filter.
func (s *Service) scanAccesses(ctx context.Context, pseudonym string, want, chunk int, token string, keep func(*auditv1.AccessRecord) verdict) ([]accesslog.Entry, string, error) {
	// The first page (no log token) is read with exactly the page size: it is the one page that is not
	// stable (new records land on it), so the scan never stops in its middle. If everything on it is
	// taken, the page is complete; otherwise the scan goes on with the log's own (stable) token.
	cur := cursor{size: want}
	if token != "" {
		var err error
		if cur, err = decodeCursor(token); err != nil {
			return nil, "", err
		}
	}
	var (
		out     []accesslog.Entry
		scanned int
	)
	for {
		recs, next, err := s.cfg.Log.ListEntries(ctx, pseudonym, cur.size, cur.logToken)
		switch {
		case errors.Is(err, accesslog.ErrInvalidPageToken):
			return nil, "", refusal.New(refusal.InvalidArgument, "page_token is not a token this API returned")
		case err != nil:
			return nil, "", unavailable(err, "the access log")
		}
		// after is the position following record i of this page.
		after := func(i int) string {
			// (On the first page, i is always its last record: the page has the page size. Were it
			// not, resuming after the page would skip records rather than repeat them.)
			if i+1 < len(recs) && cur.logToken != "" {
				return cursor{logToken: cur.logToken, size: cur.size, skip: i + 1}.encode()
			}
			if next != "" {
				return cursor{logToken: next, size: chunk}.encode()
			}
			return ""
		}
		for i := cur.skip; i < len(recs); i++ {
			scanned++
			switch keep(recs[i].Record) {
			case done:
				return out, "", nil
			case take:
				out = append(out, recs[i])
				if len(out) == want {
					return out, after(i), nil
				}
			}
			if scanned >= maxScan {
				return out, after(i), nil
			}
		}
		if next == "" {
			return out, "", nil
		}
		cur = cursor{logToken: next, size: chunk}
	}
}

// leafAccess is e's record in the words of the policies, with the leaf that binds it to the log's
// Merkle tree.
func (n names) leafAccess(e accesslog.Entry) *citizenv1.Access {
	a := n.access(e.Record)
	a.LeafIndex, a.Leaf = e.LeafIndex, e.Leaf
	return a
}

// access is rec in the words of the policies.
func (n names) access(rec *auditv1.AccessRecord) *citizenv1.Access {
	a := &citizenv1.Access{
		Id:         rec.GetId(),
		Time:       rec.GetTime(),
		Kind:       rec.GetKind(),
		Agency:     n.agency(rec.GetAgency()),
		Caseworker: rec.GetCaseworker(),
		Authority:  n.authority(rec.GetAuthority()),
		Dataset:    rec.GetDataset(),
		Fields:     rec.GetFields(),
		CaseId:     rec.GetCaseId(),
		LegalBasis: rec.GetLegalBasis(),
		Decision:   rec.GetDecision(),
		Reason:     rec.GetReason(),
		Violations: rec.GetViolations(),

		RefusalReason:  rec.GetRefusalReason(),
		RefusalSubject: rec.GetRefusalSubject(),
		Purpose:        &citizenv1.Text{En: rec.GetPurpose()},
	}
	var j *policy.Journey
	a.Journey, j = n.journey(rec.GetJourney())
	var step *policy.Step
	a.Step, step = stepRef(j, rec.GetStep())
	if step != nil {
		// The policy's text, in every language, when it is the text the record was decided under.
		if step.Purpose.EN == rec.GetPurpose() || rec.GetPurpose() == "" {
			a.Purpose = text(step.Purpose)
		}
	}
	switch rec.GetKind() {
	case auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF:
		if au, ok := n.b.Registry.Authority(rec.GetAuthority()); ok {
			a.Purpose = selfPurpose(au.Name)
		}
	case auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ:
		// The reader is an auditor (a data-protection officer), not an agency.
		a.Agency = n.auditor(rec.GetAgency())
		a.Purpose = auditorPurpose(a.Agency.GetName())
	case auditv1.AccessKind_ACCESS_KIND_CASE_READ:
		if a.Purpose.GetEn() == "" {
			a.Purpose = caseReadPurpose
		}
	case auditv1.AccessKind_ACCESS_KIND_CORRECTION_REQUESTED, auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED:
		n.correctionAccess(rec, a)
	case auditv1.AccessKind_ACCESS_KIND_DELEGATE:
		delegateAccess(a, rec)
	case auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK:
		a.Purpose = custodyCheckPurpose
	case auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED, auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED:
		// The agency is the one the consent is for; the purpose is the step's (set above when unchanged).
		a.Consent = rec.GetConsent()
		a.Delegate = rec.GetDelegate() // given by someone the citizen gave power of attorney
	case auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED:
		a.Purpose = questionAskedPurpose
	case auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED:
		a.Purpose = questionAnsweredPurpose
	case auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED:
		a.Purpose = revealedPurpose(rec.GetCovertReveal())
	}
	var rule *policy.Rule
	if step != nil {
		rule, _ = step.Rule(rec.GetAuthority(), rec.GetDataset())
	}
	for _, name := range rec.GetDerived() {
		f := &citizenv1.Fact{Name: name, Description: &citizenv1.Text{}}
		if rule != nil {
			for _, d := range rule.Derived {
				if d.Name == name {
					f.Description = text(d.Description)
				}
			}
		}
		a.Facts = append(a.Facts, f)
	}
	if rec.GetBreakGlass() != nil {
		n.breakGlassAccess(a, rec, j)
	}
	if rec.GetHiddenUntil() != nil {
		a.HiddenUntil = rec.GetHiddenUntil()
		a.HiddenReason = &citizenv1.Text{En: rec.GetHiddenReason()}
		if step != nil && step.Covert != nil && step.Covert.Reason.EN == rec.GetHiddenReason() {
			a.HiddenReason = text(step.Covert.Reason)
		}
	}
	return a
}

// auditor is the auditor id as the citizen sees it: the registry's name for it.
func (n names) auditor(id string) *citizenv1.Party {
	for _, au := range n.b.Registry.Auditors {
		if au.ID == id {
			return &citizenv1.Party{Id: id, Name: text(au.Name)}
		}
	}
	return &citizenv1.Party{Id: id, Name: &citizenv1.Text{En: "A data-protection officer", Da: "En databeskyttelsesrådgiver"}}
}

// auditorPurpose is why an auditor (by name) read the citizen's access log.
func auditorPurpose(name *citizenv1.Text) *citizenv1.Text {
	return &citizenv1.Text{
		En: name.GetEn() + " looked at your access log (who has seen your data), to check that your data is used lawfully",
		Da: orEN(name.GetDa(), name.GetEn()) + " så din adgangslog (hvem der har set dine data) for at kontrollere, at dine data bruges lovligt",
	}
}

// questionAskedPurpose and questionAnsweredPurpose word a citizen's question about an access and the
// agency's answer in the citizen's log (the text of either is on the questions page, never in the log).
var (
	questionAskedPurpose = &citizenv1.Text{
		En: "Your question about why the agency used your data",
		Da: "Dit spørgsmål om, hvorfor myndigheden brugte dine data",
	}
	questionAnsweredPurpose = &citizenv1.Text{
		En: "To answer your question about why the agency used your data",
		Da: "For at svare på dit spørgsmål om, hvorfor myndigheden brugte dine data",
	}
)

// revealedPurpose words an early reveal of a covert step's checks: how many, and why now.
func revealedPurpose(r *auditv1.CovertReveal) *citizenv1.Text {
	n := int(r.GetAccesses())
	en, da := "The check made in your case without telling you is now shown to you",
		"Den kontrol, der blev foretaget i din sag uden at du fik besked, vises nu for dig"
	if n != 1 {
		en = "The " + strconv.Itoa(n) + " checks made in your case without telling you are now shown to you"
		da = "De " + strconv.Itoa(n) + " kontroller, der blev foretaget i din sag uden at du fik besked, vises nu for dig"
	}
	if r.GetCause() == auditv1.CovertRevealCause_COVERT_REVEAL_CAUSE_NEXT_STEP {
		return &citizenv1.Text{En: en + ", because your case moved on to a later step", Da: da + ", fordi din sag gik videre til et senere trin"}
	}
	return &citizenv1.Text{En: en + ", because the case was closed", Da: da + ", fordi sagen blev lukket"}
}

// caseReadPurpose is the purpose of a case read whose step the policy no longer names.
var caseReadPurpose = &citizenv1.Text{
	En: "The agency looked at your case, which names you",
	Da: "Myndigheden så din sag, som nævner dig",
}

func orEN(da, en string) string {
	if da != "" {
		return da
	}
	return en
}

// selfPurpose is the purpose of a citizen's own access to what authority (by name) holds.
func selfPurpose(authority policy.Text) *citizenv1.Text {
	t := &citizenv1.Text{En: "You asked to see what " + authority.EN + " holds about you"}
	if authority.DA != "" {
		t.Da = "Du bad om at se, hvad " + authority.DA + " har om dig"
	}
	return t
}

// WatchAccesses implements CitizenService: new accesses as they are logged, until the caller cancels
// or the broker stops. The response headers are sent once the subscription is in place, so a client
// that has received them sees every access logged after that.
func (s *Service) WatchAccesses(_ *citizenv1.WatchAccessesRequest, stream grpc.ServerStreamingServer[citizenv1.WatchAccessesResponse]) error {
	c, err := citizenOf(stream.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stopWatch := context.AfterFunc(s.stopping, cancel)
	defer stopWatch()

	w, err := s.cfg.Log.Watch(ctx, c.Pseudonym.Value)
	if err != nil {
		return unavailable(err, "the access log")
	}
	defer w.Stop()
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	// The index may publish a record twice (re-indexing after an outage); remember the recent ids.
	seen := newRecent(256)
	for {
		e, err := w.NextEntry(ctx)
		switch {
		case s.stopping.Err() != nil:
			return refusal.New(refusal.Unavailable, "the broker is stopping; watch again")
		case stream.Context().Err() != nil:
			return stream.Context().Err()
		case err != nil:
			return unavailable(err, "the access log")
		}
		if s.covertView(s.cfg.Now()).hidden(ctx, e.Record) || !seen.add(e.Record.GetId()) {
			continue
		}
		n := names{s.cfg.Policies()}
		a := n.leafAccess(e)
		s.addAnswers(ctx, n, c.Pseudonym.Value, e.Record, a)
		if err := stream.Send(&citizenv1.WatchAccessesResponse{Access: a}); err != nil {
			return err
		}
	}
}

// recent is a small set of the last ids seen.
type recent struct {
	ring []string
	set  map[string]struct{}
	next int
}

func newRecent(n int) *recent {
	return &recent{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

// add reports whether id is new, and remembers it.
func (r *recent) add(id string) bool {
	if _, ok := r.set[id]; ok {
		return false
	}
	delete(r.set, r.ring[r.next])
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return true
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
