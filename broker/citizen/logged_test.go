package citizen_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestConsentsAndQuestionsLogged: giving and withdrawing consent, asking about an access and the
// agency's answer each write an access record before they take effect (so the yearly report counts
// them from the log), in the citizen's words, never with the text of a question or an answer. They
// are the citizen's own acts: there is no agency to question about them. With the log unavailable
// nothing takes effect.
func TestConsentsAndQuestionsLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	jn, st := firstConsentStep(t, e.b.Bundle())
	j, s := jn.ID, st.ID
	first := jn.Steps[0]
	if first.Covert != nil || len(first.Rules) == 0 {
		t.Fatalf("journey %s: the test questions an access at its first step, which must not be covert and must release something", j)
	}
	byKind := func() map[auditv1.AccessKind][]*citizenv1.Access {
		out := map[auditv1.AccessKind][]*citizenv1.Access{}
		for _, a := range e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}) {
			out[a.GetKind()] = append(out[a.GetKind()], a)
		}
		return out
	}

	g, err := c.GrantConsent(as(tokAnna), &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: int32(otherDays(t, st.Consent))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeConsent(as(tokAnna), &citizenv1.RevokeConsentRequest{Journey: j, Step: s}); err != nil {
		t.Fatal(err)
	}
	// Withdrawing again changes nothing and logs nothing.
	if _, err := c.RevokeConsent(as(tokAnna), &citizenv1.RevokeConsentRequest{Journey: j, Step: s}); err != nil {
		t.Fatal(err)
	}
	k := byKind()
	gr, rv := k[auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED], k[auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED]
	if len(gr) != 1 || len(rv) != 1 {
		t.Fatalf("%d consent records given, %d withdrawn; want 1 and 1", len(gr), len(rv))
	}
	if a := gr[0]; a.GetAgency().GetId() != st.Agency || a.GetStep().GetId() != s || a.GetJourney().GetId() != j ||
		!a.GetConsent().GetExpiresAt().AsTime().Equal(g.GetConsent().GetExpiresAt().AsTime()) || a.GetPurpose().GetDa() == "" || len(a.GetFields()) != 0 {
		t.Errorf("consent given: %v", a)
	}
	if a := rv[0]; !a.GetConsent().GetGrantedAt().AsTime().Equal(g.GetConsent().GetGrantedAt().AsTime()) || a.GetAgency().GetId() != st.Agency {
		t.Errorf("consent withdrawn: %v", a)
	}
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: gr[0].GetId(), Message: "Why?"})
	wantCode(t, err, codes.FailedPrecondition, "your own")

	cs := e.open(first.Agency, j, anna)
	rel := e.release(first.Agency, cs.GetId(), first.Rules[0].Authority, first.Rules[0].Dataset)
	const secretQ, secretA = "What is this for? secret-q-5521", "For your case. secret-a-8812"
	e.secrets = append(e.secrets, secretQ, secretA)
	qa, err := c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: rel.GetAccessId(), Message: secretQ})
	if err != nil {
		t.Fatal(err)
	}
	holder := e.agency(first.Agency)
	if _, err := holder.AnswerQuestion(cw("cw-4"), &brokerv1.AnswerQuestionRequest{QuestionId: qa.GetQuestion().GetId(), Answer: secretA}); err != nil {
		t.Fatal(err)
	}
	k = byKind()
	asked, answered := k[auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED], k[auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED]
	if len(asked) != 1 || len(answered) != 1 {
		t.Fatalf("%d question records asked, %d answered; want 1 and 1", len(asked), len(answered))
	}
	for _, a := range []*citizenv1.Access{asked[0], answered[0]} {
		if a.GetAgency().GetId() != first.Agency || a.GetCaseId() != cs.GetId() || a.GetJourney().GetId() != j ||
			a.GetPurpose().GetEn() == "" || a.GetPurpose().GetDa() == "" || strings.Contains(a.String(), "secret-") {
			t.Errorf("%v: %v", a.GetKind(), a)
		}
	}
	if answered[0].GetCaseworker() != "cw-4" {
		t.Errorf("answered by %q", answered[0].GetCaseworker())
	}
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: asked[0].GetId(), Message: "Why?"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: answered[0].GetId(), Message: "Why?"})
	wantCode(t, err, codes.FailedPrecondition)

	// An open question, then the log goes away: nothing more takes effect.
	open, err := c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: rel.GetAccessId(), Message: "And again?"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.b.AccessLog().Close(); err != nil {
		t.Fatal(err)
	}
	_, err = c.GrantConsent(as(tokAnna), &citizenv1.GrantConsentRequest{Journey: j, Step: s})
	wantCode(t, err, codes.Unavailable)
	if lc, err := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{}); err != nil || len(lc.GetConsents()) != 1 || lc.GetConsents()[0].GetRevokedAt() == nil {
		t.Fatalf("a consent was given without its record: %v, %v", lc.GetConsents(), err)
	}
	_, err = holder.AnswerQuestion(cw("cw-4"), &brokerv1.AnswerQuestionRequest{QuestionId: open.GetQuestion().GetId(), Answer: "Later."})
	wantCode(t, err, codes.Unavailable)
	lq, err := holder.ListQuestions(cw("cw-4"), &brokerv1.ListQuestionsRequest{OnlyOpen: true})
	if err != nil || len(lq.GetQuestions()) != 1 {
		t.Fatalf("an answer was stored without its record: %v, %v", lq.GetQuestions(), err)
	}
}
