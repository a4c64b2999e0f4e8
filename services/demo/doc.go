// Package demo generates a deterministic synthetic population of Danish-inspired citizens for the
// example authorities, the demo and the tests. Nothing in it describes a real person: names and
// streets are common, municipality and postal codes are real, and employers, clinics, schools and
// their numbers are invented.
//
// [New] draws the population from math/rand/v2 with a fixed seed, relative to a reference month, so
// the same size and month give the same citizens on every run and machine, and "the last 12 months"
// always has data. Citizens have CPR-like ids (DDMMYY plus four digits; the seventh digit encodes
// the century and the last digit the sex, as in the real register), live in households (couples
// and their children are all citizens), and carry 24 months of income reports, employments, GP
// clinic, sick notes with ICD-10 codes, employers' sick-leave reports, municipal benefit cases,
// daycare and school places.
//
// # Featured citizens
//
// Three households are designed for the README walk-through and the tests. The adults' ids are
// stable across reference months; their children's ids are not, because the children's ages are
// kept constant relative to the reference month.
//
//   - 1403871237 Lars Nørgaard Møller ("sick-employee"): warehouse worker in Copenhagen (0101),
//     employed for over four years at about 31,000 DKK a month, a current sick note (M51.1, 56 days,
//     50 % work capacity) and an employer's sick-leave report; married to Maria Møller (2501882716),
//     two children.
//   - 2208912468 Sofie Andersen ("moving-family"): moved from Aalborg (0851) to Aarhus (0751) twelve
//     days before the reference month with her partner Jonas Kristensen (0205891353), a newborn and
//     a seven-year-old in grade 1.
//   - 0911983624 Camilla Holm ("low-earner"): part-time shop assistant in Odense (0461) earning
//     below 20,000 DKK in ten of every twelve months.
package demo
