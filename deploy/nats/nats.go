// Package natsdeploy is the NATS cluster configuration of deploy/nats (cluster-*.conf, auth.conf).
// It has no code: its tests start the three nodes from these very files with the real nats-server,
// check that auth.conf admits exactly the registry's agencies with the permissions the embedded
// server gives them, and connect the broker and an agency the way a deployment does.
package natsdeploy
