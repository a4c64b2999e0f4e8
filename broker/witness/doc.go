// Package witness cosigns the access log's checkpoints, per C2SP tlog-witness
// (https://c2sp.org/tlog-witness) and tlog-cosignature (https://c2sp.org/tlog-cosignature), so that
// the log's honesty does not rest on the broker's own storage.
//
// It holds both sides of the protocol:
//
//   - Server is the small HTTP service another institution runs — the data-protection authority, an
//     ombudsman, a university — with its own Ed25519 key. It knows a list of logs (origin and note
//     verifier keys), keeps the latest checkpoint it cosigned for each in a state directory of its own
//     (it runs elsewhere and never touches the broker's NATS), and answers POST /add-checkpoint: it
//     cosigns a checkpoint only if the log signed it and a consistency proof shows it extends the one
//     it cosigned before. A log that rewrote its history cannot get that cosignature.
//   - Cosigner is the broker's client: for every new signed checkpoint of the access log it submits
//     the checkpoint with a consistency proof to each configured witness, collects the cosignatures
//     and stores the cosigned checkpoint in JetStream (the COSIGNED bucket), so every replica serves
//     it. A witness that refuses raises an alarm (error-level log line, counter, Health).
//   - Policy is the k-of-n rule a verifier applies to a cosigned checkpoint (the Sigsum/Tessera policy
//     file format: witness, group, quorum and log lines).
package witness
