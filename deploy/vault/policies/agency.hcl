# An agency client (@NAME@): only its own certificate.
path "@PKI@/issue/agency-@NAME@" {
  capabilities = ["update"]
}
