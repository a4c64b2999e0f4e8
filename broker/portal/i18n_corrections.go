package portal

// correctionMessages are the words of the "correct my data" pages, kept in one block; init adds them
// to messages.
var correctionMessages = map[string]msg{
	"corrections.title":            {"My correction requests", "Mine anmodninger om rettelse"},
	"corrections.lead":             {"When something an authority holds about you is wrong, you can ask it to correct it. The authority answers here, with its reason.", "Når noget, en myndighed har om dig, er forkert, kan du bede den rette det. Myndigheden svarer her, med sin begrundelse."},
	"corrections.empty":            {"You have not asked for any corrections.", "Du har ikke bedt om nogen rettelser."},
	"corrections.how":              {"To ask for a correction, open what an authority holds under My data and choose “Something is wrong”.", "For at bede om en rettelse skal du åbne det, en myndighed har, under Mine data og vælge “Noget er forkert”."},
	"corrections.flash.filed":      {"Your request has been sent to the authority. You can follow it here.", "Din anmodning er sendt til myndigheden. Du kan følge den her."},
	"corrections.field":            {"%s at %s", "%s hos %s"},
	"corrections.requested":        {"Asked on %s", "Anmodet den %s"},
	"corrections.reason":           {"Why you say it is wrong", "Hvorfor du mener, det er forkert"},
	"corrections.proposed":         {"What you say is right", "Hvad du mener, er rigtigt"},
	"corrections.state.open":       {"Waiting for the authority", "Venter på myndigheden"},
	"corrections.state.accepted":   {"Accepted: the authority corrects it", "Godkendt: myndigheden retter det"},
	"corrections.state.rejected":   {"Not accepted", "Ikke godkendt"},
	"corrections.state.unverified": {"This request could not be confirmed. Please ask again.", "Denne anmodning kunne ikke bekræftes. Spørg venligst igen."},
	"corrections.decision":         {"The authority’s answer, %s", "Myndighedens svar, %s"},
	"corrections.cases":            {"Where this was used", "Hvor det blev brugt"},
	"corrections.cases.p":          {"These agencies got this information in your cases. They have been told that you disputed it, and of the outcome — not what you wrote.", "Disse myndigheder fik denne oplysning i dine sager. De har fået besked om, at du har gjort indsigelse, og om resultatet – ikke hvad du skrev."},
	"corrections.case":             {"%s – %s, %s", "%s – %s, %s"},
	"corrections.nocases":          {"None of your cases used it.", "Ingen af dine sager har brugt det."},
	"correct.title":                {"Something is wrong in %s", "Noget er forkert i %s"},
	"correct.lead":                 {"Tell %s which information is wrong and why. They will look at it and answer you. Your request is written in your log.", "Fortæl %s, hvilken oplysning der er forkert, og hvorfor. De ser på det og svarer dig. Din anmodning bliver skrevet i din log."},
	"correct.field":                {"Which information is wrong?", "Hvilken oplysning er forkert?"},
	"correct.reason":               {"Why is it wrong?", "Hvorfor er den forkert?"},
	"correct.reason.hint":          {"For example: “I moved on 1 March.”", "For eksempel: “Jeg flyttede den 1. marts.”"},
	"correct.value":                {"What is right? (optional)", "Hvad er rigtigt? (valgfrit)"},
	"correct.value.hint":           {"Only the authority sees this. It is never shown to the agencies that used the information.", "Kun myndigheden ser dette. Det vises aldrig for de myndigheder, der har brugt oplysningen."},
	"correct.send":                 {"Send to the authority", "Send til myndigheden"},
	"correct.cancel":               {"Cancel", "Annullér"},
	"correct.error.field":          {"Choose the information that is wrong.", "Vælg den oplysning, der er forkert."},
	"correct.error.reason":         {"Write why the information is wrong.", "Skriv, hvorfor oplysningen er forkert."},
	"correct.error.reason_long":    {"Please keep the reason under 2,000 characters.", "Hold venligst begrundelsen under 2.000 tegn."},
	"correct.error.value_long":     {"Please keep the right value under 1,000 characters.", "Hold venligst den rigtige værdi under 1.000 tegn."},
	"dataset.correct":              {"Something is wrong", "Noget er forkert"},
	"dataset.correct.p":            {"If something here is wrong, ask the authority to correct it.", "Hvis noget her er forkert, så bed myndigheden om at rette det."},
	"entry.correction.you":         {"You", "Du"},
	"entry.correction.requested":   {"asked %s to correct:", "bad %s om at rette:"},
	"entry.correction.decided":     {"answered your request to correct:", "svarede på din anmodning om at rette:"},
	"entry.correction.follow":      {"See the answer", "Se svaret"},
	"data.corrections":             {"My correction requests", "Mine anmodninger om rettelse"},
	// Consents and questions in the timeline (issue 15, item 6: they are in the access log).
	"entry.consent.granted":   {"gave %s consent to:", "gav %s samtykke til:"},
	"entry.consent.revoked":   {"withdrew the consent you gave %s to:", "trak det samtykke tilbage, du gav %s til:"},
	"entry.consent.until":     {"%s, until %s", "%s, indtil %s"},
	"entry.consent.follow":    {"See your consents", "Se dine samtykker"},
	"entry.question.asked":    {"asked %s:", "spurgte %s:"},
	"entry.question.answered": {"answered your question:", "svarede på dit spørgsmål:"},
	"entry.question.item":     {"why they used your data", "hvorfor de brugte dine data"},
	"entry.question.follow":   {"See your questions and the answers", "Se dine spørgsmål og svarene"},
}

func init() {
	for k, m := range correctionMessages {
		messages[k] = m
	}
}
