# Aperture broker: signs checkpoints and obtains data keys with transit, and its own certificate.
# It cannot read or export key material, rotate keys or issue certificates for anyone else.
# Placeholders (@...@) are filled in by setup.sh.

# Verification keys (public) of the checkpoint key, one per version.
path "@TRANSIT@/keys/@CHECKPOINT_KEY@" {
  capabilities = ["read"]
}

# Checkpoint signatures; the private key never leaves Vault.
path "@TRANSIT@/sign/@CHECKPOINT_KEY@" {
  capabilities = ["update"]
}

# New data keys, only in wrapped form (the plaintext endpoint is not granted).
path "@TRANSIT@/datakey/wrapped/@DATA_KEY@" {
  capabilities = ["update"]
}

# Unwrap the stored data keys once at start.
path "@TRANSIT@/decrypt/@DATA_KEY@" {
  capabilities = ["update"]
}

path "@PKI@/issue/broker" {
  capabilities = ["update"]
}
