#!/usr/bin/env bash
# Throwaway PKI for the TLS tests and for trying mutual TLS by hand: NOT for production.
#
#   tests/tls/make-certs.sh OUTDIR
#
# Writes PEM files to OUTDIR (keys 0600), all EC P-256, valid for 2 days:
#   ca.pem                        the CA that agents and the collector trust (client_ca, collector_ca)
#   agent.pem/.key                an agent's identity: CN=agent, SAN DNS:localhost, IP:127.0.0.1,
#                                 usable as its TCP listener's server certificate and as a client
#   collector.pem/.key            the collector's server certificate (same SANs)
#   alice-operator.pem/.key       client certificate CN=alice-operator
#   bob-reader.pem/.key           client certificate CN=bob-reader
#   node-1.pem/.key               client certificate CN=node-1 (an agent's uplink to the collector)
#   rogue-ca.pem                  a second, untrusted CA
#   rogue.pem/.key                client certificate CN=alice-operator signed by rogue-ca: the
#                                 right name from the wrong CA, which must be refused
#
# Idempotent: a certificate that exists and still verifies against its CA is kept; anything
# missing, expired or signed by a since-replaced CA is issued again.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
if ! command -v openssl >/dev/null 2>&1; then
  echo "$0: openssl not found on PATH: install the Debian package 'openssl'" >&2
  exit 1
fi

out=$1
days=2
mkdir -p "$out"
cd "$out"
umask 077

# new_key NAME: an EC P-256 private key in NAME.key (PKCS#8), mode 0600.
new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
  chmod 600 "$1.key"
}

# ca NAME CN: a self-signed CA, unless NAME.pem exists, is a CA and has not expired.
ca() {
  local name=$1 cn=$2
  if [ -f "$name.pem" ] && [ -f "$name.key" ] \
    && openssl x509 -in "$name.pem" -noout -checkend 3600 >/dev/null 2>&1; then
    return 0
  fi
  new_key "$name"
  openssl req -x509 -new -key "$name.key" -sha256 -days "$days" -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$name.pem" 2>/dev/null
  chmod 644 "$name.pem"
}

# leaf NAME CN CA USAGE [SAN]: a certificate for CN signed by CA, unless a valid one exists.
# USAGE is the extendedKeyUsage (serverAuth, clientAuth or both).
leaf() {
  local name=$1 cn=$2 issuer=$3 usage=$4 san=${5:-}
  if [ -f "$name.pem" ] && [ -f "$name.key" ] \
    && openssl verify -CAfile "$issuer.pem" "$name.pem" >/dev/null 2>&1 \
    && openssl x509 -in "$name.pem" -noout -checkend 3600 >/dev/null 2>&1; then
    return 0
  fi
  new_key "$name"
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    echo "authorityKeyIdentifier=keyid"
    if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
  } >"$ext"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
  if ! openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" \
    -CAcreateserial -sha256 -days "$days" -extfile "$ext" -out "$name.pem" 2>"$name.err"; then
    cat "$name.err" >&2
    rm -f "$ext" "$name.csr" "$name.err"
    echo "$0: could not issue $name.pem" >&2
    exit 1
  fi
  rm -f "$ext" "$name.csr" "$name.err"
  chmod 644 "$name.pem"
}

servers="DNS:localhost,IP:127.0.0.1"
ca ca "health-agent test CA"
leaf agent agent ca "serverAuth,clientAuth" "$servers"
leaf collector collector ca serverAuth "$servers"
leaf alice-operator alice-operator ca clientAuth
leaf bob-reader bob-reader ca clientAuth
leaf node-1 node-1 ca clientAuth
ca rogue-ca "rogue test CA"
leaf rogue alice-operator rogue-ca clientAuth

echo "$out: CA, agent, collector, alice-operator, bob-reader, node-1 and rogue certificates ready"
