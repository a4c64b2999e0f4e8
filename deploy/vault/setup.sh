#!/usr/bin/env bash
# Configure a Vault for Aperture with the vault CLI (VAULT_ADDR and an admin VAULT_TOKEN set):
# transit keys, a PKI with one role per component, and one AppRole with a least-privilege policy
# per component. Safe to run again: existing mounts, keys and the CA are kept; roles and policies
# are rewritten with the same content.
#
#   TRUST_DOMAIN=gov.example AUTHORITIES="population tax" AGENCIES="jobcentre" ./setup.sh
#
# Prints each component's role id; create secret ids with
#   vault write -f auth/$APPROLE/role/<component>/secret-id
# and hand them to the component over a trusted channel (response wrapping: -wrap-ttl=5m).
set -euo pipefail

TRUST_DOMAIN=${TRUST_DOMAIN:-aperture.local}
AUTHORITIES=${AUTHORITIES:-population tax health employment municipality}
AGENCIES=${AGENCIES:-}
TRANSIT=${TRANSIT:-transit}
PKI=${PKI:-pki}
APPROLE=${APPROLE:-approle}
CHECKPOINT_KEY=${CHECKPOINT_KEY:-aperture-checkpoint}
DATA_KEY=${DATA_KEY:-aperture-data}
CERT_MAX_TTL=${CERT_MAX_TTL:-72h}
TOKEN_TTL=${TOKEN_TTL:-1h}
TOKEN_MAX_TTL=${TOKEN_MAX_TTL:-24h}
SECRET_ID_TTL=${SECRET_ID_TTL:-0} # 0: secret ids do not expire; set e.g. 720h to force rotation

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v vault >/dev/null || { echo "setup.sh: the vault CLI is required" >&2; exit 1; }
vault token lookup >/dev/null || { echo "setup.sh: cannot reach Vault at ${VAULT_ADDR:-?} with VAULT_TOKEN" >&2; exit 1; }

enable_secrets() { # type path [args...]
  local type=$1 path=$2; shift 2
  if vault secrets list -format=json | grep -q "\"$path/\""; then
    echo "secrets engine $path/ exists"
  else
    vault secrets enable -path="$path" "$@" "$type"
  fi
}

render() { # template name
  sed -e "s|@TRANSIT@|$TRANSIT|g" -e "s|@CHECKPOINT_KEY@|$CHECKPOINT_KEY|g" -e "s|@DATA_KEY@|$DATA_KEY|g" \
      -e "s|@PKI@|$PKI|g" -e "s|@NAME@|$2|g" "$here/policies/$1.hcl"
}

# --- transit: checkpoint signing key (ed25519, not exportable) and the key that wraps data keys.
enable_secrets transit "$TRANSIT"
vault read "$TRANSIT/keys/$CHECKPOINT_KEY" >/dev/null 2>&1 || vault write -f "$TRANSIT/keys/$CHECKPOINT_KEY" type=ed25519
vault read "$TRANSIT/keys/$DATA_KEY" >/dev/null 2>&1 || vault write -f "$TRANSIT/keys/$DATA_KEY" type=aes256-gcm96
# Keys may never be deleted: that would orphan every checkpoint signature and every data key.
vault write "$TRANSIT/keys/$CHECKPOINT_KEY/config" deletion_allowed=false >/dev/null
vault write "$TRANSIT/keys/$DATA_KEY/config" deletion_allowed=false >/dev/null

# --- PKI: a CA for the trust domain (replace with an intermediate signed by your own root in
# production: vault write $PKI/intermediate/generate/internal ...).
enable_secrets pki "$PKI" -max-lease-ttl=87600h
if ! vault read "$PKI/cert/ca" >/dev/null 2>&1 || [ -z "$(vault read -field=certificate "$PKI/cert/ca" 2>/dev/null)" ]; then
  vault write -field=certificate "$PKI/root/generate/internal" \
    common_name="Aperture CA $TRUST_DOMAIN" key_type=ec key_bits=256 ttl=87600h >/dev/null
fi

# pki_role name spiffe-id: a role that issues exactly one SPIFFE ID as URI SAN, nothing else.
pki_role() {
  vault write "$PKI/roles/$1" \
    allowed_uri_sans="$2" require_cn=false allow_any_name=false allowed_domains="" \
    enforce_hostnames=false allow_ip_sans=false allow_localhost=false \
    server_flag=true client_flag=true key_type=ec key_bits=256 \
    ttl=24h max_ttl="$CERT_MAX_TTL" no_store=true >/dev/null
}

# --- AppRole login.
if ! vault auth list -format=json | grep -q "\"$APPROLE/\""; then
  vault auth enable -path="$APPROLE" approle
fi

# component kind name policy-template
component() {
  local comp=$1 kind=$2 name=$3 id
  if [ "$kind" = broker ]; then id="spiffe://$TRUST_DOMAIN/broker"; else id="spiffe://$TRUST_DOMAIN/$kind/$name"; fi
  pki_role "$comp" "$id"
  render "$kind" "$name" | vault policy write "aperture-$comp" - >/dev/null
  vault write "auth/$APPROLE/role/$comp" token_policies="aperture-$comp" \
    token_ttl="$TOKEN_TTL" token_max_ttl="$TOKEN_MAX_TTL" secret_id_ttl="$SECRET_ID_TTL" >/dev/null
  printf '%-32s %-48s role_id=%s\n' "$comp" "$id" "$(vault read -field=role_id "auth/$APPROLE/role/$comp/role-id")"
}

component broker broker ""
for a in $AUTHORITIES; do component "authority-$a" authority "$a"; done
for a in $AGENCIES; do component "agency-$a" agency "$a"; done
