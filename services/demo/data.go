package demo

// The reference data below is what makes the population look Danish: real municipality codes, postal
// codes and streets; common names; ICD-10 codes; DISCO-08 occupation codes. Employers, clinics,
// schools and daycare institutions are invented, and so are their CVR and clinic numbers.

type area struct {
	postalCode, city string
	district         string // names local schools, daycare and clinics
	streets          []string
}

type municipality struct {
	code, name string
	weight     int // share of the population, roughly by real size
	areas      []area
}

var municipalities = []municipality{
	{"0101", "København", 30, []area{
		{"2200", "København N", "Nørrebro", []string{"Nørrebrogade", "Jagtvej", "Blågårdsgade", "Elmegade", "Guldbergsgade", "Stefansgade"}},
		{"2100", "København Ø", "Østerbro", []string{"Østerbrogade", "Nordre Frihavnsgade", "Classensgade", "Willemoesgade", "Strandboulevarden"}},
		{"1620", "København V", "Vesterbro", []string{"Vesterbrogade", "Istedgade", "Enghavevej", "Sønder Boulevard", "Matthæusgade"}},
		{"2300", "København S", "Amager", []string{"Amagerbrogade", "Holmbladsgade", "Englandsvej", "Italiensvej"}},
		{"2500", "Valby", "Valby", []string{"Valby Langgade", "Toftegårds Allé", "Gammel Køge Landevej"}},
		{"2400", "København NV", "Bispebjerg", []string{"Frederikssundsvej", "Tagensvej", "Rentemestervej"}},
	}},
	{"0147", "Frederiksberg", 5, []area{
		{"2000", "Frederiksberg", "Frederiksberg", []string{"Gammel Kongevej", "Falkoner Allé", "Smallegade", "Godthåbsvej", "Finsensvej"}},
	}},
	{"0157", "Gentofte", 3, []area{
		{"2900", "Hellerup", "Hellerup", []string{"Strandvejen", "Hellerupvej", "Ryvangs Allé"}},
		{"2820", "Gentofte", "Gentofte", []string{"Gentoftegade", "Bernstorffsvej"}},
	}},
	{"0167", "Hvidovre", 2, []area{
		{"2650", "Hvidovre", "Hvidovre", []string{"Hvidovrevej", "Avedøre Havnevej", "Hvidovre Strandvej"}},
	}},
	{"0265", "Roskilde", 3, []area{
		{"4000", "Roskilde", "Roskilde", []string{"Algade", "Skomagergade", "Køgevej", "Maglegårdsvej"}},
	}},
	{"0461", "Odense", 8, []area{
		{"5000", "Odense C", "Odense Centrum", []string{"Vestergade", "Kongensgade", "Overgade", "Nørregade"}},
		{"5200", "Odense V", "Bolbro", []string{"Middelfartvej", "Bolbro Brogade", "Stadionvej"}},
		{"5230", "Odense M", "Hunderup", []string{"Munkebjergvej", "Hunderupvej", "Niels Bohrs Allé"}},
	}},
	{"0561", "Esbjerg", 4, []area{
		{"6700", "Esbjerg", "Esbjerg", []string{"Kongensgade", "Torvegade", "Storegade", "Skolegade"}},
	}},
	{"0615", "Horsens", 3, []area{
		{"8700", "Horsens", "Horsens", []string{"Søndergade", "Nørregade", "Hospitalsgade"}},
	}},
	{"0621", "Kolding", 3, []area{
		{"6000", "Kolding", "Kolding", []string{"Jernbanegade", "Låsbygade", "Haderslevvej"}},
	}},
	{"0630", "Vejle", 3, []area{
		{"7100", "Vejle", "Vejle", []string{"Vestergade", "Dæmningen", "Boulevarden"}},
	}},
	{"0730", "Randers", 3, []area{
		{"8900", "Randers C", "Randers", []string{"Vestergade", "Jernbanegade", "Tordenskjoldsgade"}},
	}},
	{"0751", "Aarhus", 14, []area{
		{"8000", "Aarhus C", "Frederiksbjerg", []string{"Søndergade", "Frederiksgade", "Jægergårdsgade", "Nørregade", "Vestergade"}},
		{"8200", "Aarhus N", "Trøjborg", []string{"Randersvej", "Trøjborgvej", "Tordenskjoldsgade"}},
		{"8210", "Aarhus V", "Hasle", []string{"Silkeborgvej", "Viborgvej", "Hasle Ringvej"}},
		{"8260", "Viby J", "Viby", []string{"Skanderborgvej", "Ørnevej", "Kongsvang Allé"}},
	}},
	{"0791", "Viborg", 2, []area{
		{"8800", "Viborg", "Viborg", []string{"Sct. Mathias Gade", "Vestergade", "Gravene"}},
	}},
	{"0851", "Aalborg", 8, []area{
		{"9000", "Aalborg", "Aalborg Centrum", []string{"Boulevarden", "Vesterbro", "Algade", "Danmarksgade"}},
		{"9200", "Aalborg SV", "Skalborg", []string{"Hobrovej", "Skalborgvej"}},
		{"9210", "Aalborg SØ", "Gug", []string{"Humlebakken", "Gugvej"}},
	}},
}

// Units of flats; a house has none.
var units = []string{"st. tv.", "st. th.", "1. tv.", "1. th.", "2. tv.", "2. th.", "3. tv.", "3. mf.", "4. th."}

// nameSet is a naming tradition; most citizens get Danish names.
type nameSet struct {
	weight         int
	female, male   []string
	family         []string
	middleFamilies bool // Danish families often carry a second family name as a middle name
}

var nameSets = []nameSet{
	{weight: 88, middleFamilies: true,
		female: []string{"Anne", "Mette", "Kirsten", "Hanne", "Helle", "Susanne", "Lene", "Camilla", "Maria", "Louise", "Sofie", "Emma", "Ida", "Freja", "Clara", "Laura", "Julie", "Ella", "Alma", "Karla", "Nanna", "Signe", "Sara", "Mathilde", "Line", "Marianne", "Pia", "Charlotte", "Birgitte", "Inger"},
		male:   []string{"Lars", "Jens", "Peter", "Michael", "Henrik", "Søren", "Thomas", "Jesper", "Anders", "Niels", "Rasmus", "Martin", "Mads", "Frederik", "Mikkel", "Oliver", "William", "Noah", "Lucas", "Carl", "Emil", "Magnus", "Victor", "Oscar", "Christian", "Jonas", "Kasper", "Bo", "Ole", "Poul"},
		family: []string{"Nielsen", "Jensen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen", "Sørensen", "Rasmussen", "Jørgensen", "Petersen", "Madsen", "Kristensen", "Olsen", "Thomsen", "Christiansen", "Poulsen", "Johansen", "Møller", "Mortensen", "Knudsen", "Jakobsen", "Mikkelsen", "Frederiksen", "Laursen", "Henriksen", "Lund", "Schmidt", "Eriksen", "Holm", "Clausen", "Simonsen", "Svendsen", "Iversen", "Østergaard", "Vestergaard", "Nørgaard", "Kjær", "Bach", "Dam"},
	},
	{weight: 4,
		female: []string{"Fatima", "Aisha", "Mariam", "Yasmin", "Noor"},
		male:   []string{"Mohammed", "Ali", "Omar", "Ahmad", "Yusuf"},
		family: []string{"Hussein", "Ahmad", "Hassan", "Abdi", "Khalil"},
	},
	{weight: 3,
		female: []string{"Ayşe", "Elif", "Zeynep", "Emine"},
		male:   []string{"Mehmet", "Emre", "Ahmet", "Mustafa"},
		family: []string{"Yilmaz", "Kaya", "Demir", "Şahin"},
	},
	{weight: 3,
		female: []string{"Agnieszka", "Katarzyna", "Anna", "Magdalena"},
		male:   []string{"Piotr", "Tomasz", "Krzysztof", "Paweł"},
		family: []string{"Nowak", "Kaczmarek", "Wójcik", "Mazur"},
	},
	{weight: 2,
		female: []string{"Linh", "Thao", "Mai", "Hoa"},
		male:   []string{"Minh", "Duc", "Tuan", "Long"},
		family: []string{"Nguyen", "Tran", "Pham", "Le"},
	},
}

var femaleMiddle = []string{"Marie", "Sofie", "Louise", "Kathrine", "Margrethe"}

// employer is an invented business with one typical occupation.
type employer struct {
	cvr, name  string
	occupation string // DISCO-08
	// Monthly gross for 37 hours a week, in DKK.
	minPay, maxPay int
	// studentJob marks employers that hire students part-time.
	studentJob bool
}

var employers = []employer{
	{"34125687", "Nordhavn Logistik ApS", "9333", 27000, 32000, false},
	{"29384756", "Hospital Øresund", "2221", 36000, 44000, false},
	{"31472958", "Fynsk Byg A/S", "7112", 34000, 40000, false},
	{"25836914", "Dansk Kontorservice ApS", "4110", 28000, 33000, false},
	{"38164275", "Dagligvarehuset Torvet A/S", "5223", 22500, 26000, true},
	{"40517362", "Hvidbjerg Software ApS", "2512", 45000, 60000, false},
	{"27649318", "Taxa Midt ApS", "8322", 24000, 30000, false},
	{"33958241", "Friskolen Lindely", "2341", 38000, 44000, false},
	{"36281475", "Børnehuset Kastanjen", "5311", 27000, 31000, false},
	{"28473619", "Rengøringsselskabet Skinne ApS", "9112", 22000, 26000, true},
	{"39726154", "Revisionsfirmaet Holm & Krog", "2411", 42000, 52000, false},
	{"26158347", "Autoværkstedet Vestbyen", "7231", 30000, 35000, false},
	{"35481726", "Restaurant Havnekanten", "5120", 25000, 30000, true},
	{"30619485", "Plejecenter Solgården", "5322", 27000, 31000, false},
	{"41852736", "Jysk Vindteknik A/S", "2144", 48000, 58000, false},
	{"32746159", "Dansk Forsikringsservice A/S", "4222", 29000, 34000, false},
	{"37592814", "Mejeriet Ådalen A/S", "8160", 29000, 33000, false},
	{"24917365", "Apoteket Kronen", "3213", 30000, 34000, false},
	{"42365817", "Socialrådgivning Syd", "2635", 38000, 43000, false},
	{"43176258", "Café Lille Torv", "5131", 23000, 26000, true},
}

// Payers of income that is not salary. The tax register shows them like employers.
var (
	unemploymentFund = employer{cvr: "29841237", name: "Fagenes A-kasse"}
	pensionPayer     = employer{cvr: "21954683", name: "Pensionsudbetalingen"}
)

// Diagnoses (ICD-10) for short and for long sick notes.
var (
	shortDiagnoses = []string{"J06.9", "J11.1", "A09.9", "G43.9", "S93.4", "M54.5", "U07.1"}
	longDiagnoses  = []string{"F32.1", "F43.2", "F41.1", "M51.1", "M75.1", "S82.6", "C50.9", "S83.5"}
)

var daycareNames = []string{"Mælkebøtten", "Solsikken", "Troldehøj", "Regnbuen", "Spiren", "Myretuen", "Bikuben", "Humlebien"}

var caseNotes = map[string][]string{
	"sickness": {"Sick note received; follow-up interview booked.", "Employer has applied for reimbursement.", "Partial return to work agreed with employer."},
	"housing":  {"Rent and household income documented; recalculated each January.", "Lease received; awaiting landlord confirmation."},
	"child":    {"Supplement granted; reviewed when household changes.", "Income documentation received."},
	"cash":     {"Entitled to unemployment benefit from the A-kasse; no cash benefit.", "Job centre interview completed."},
}
