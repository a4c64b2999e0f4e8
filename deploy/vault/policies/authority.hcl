# An Aperture authority service (@NAME@): only its own certificate.
path "@PKI@/issue/authority-@NAME@" {
  capabilities = ["update"]
}
