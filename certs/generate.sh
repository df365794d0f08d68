#!/usr/bin/env bash
# Regenerates the dnsward test PKI. Test-only keys: they are public, never use
# them for anything real. Writes next to this script; runnable from any cwd.
# Requires only openssl (1.1.1 or 3.x).
set -euo pipefail

DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

DAYS=36500
TMP="$(mktemp -d "$DIR/.gen.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# Random positive 128-bit serial (top bit cleared so it encodes as positive).
serial() {
    local hex
    hex="$(openssl rand -hex 16)"
    printf '0x%x%s' $(( 0x${hex:0:1} & 7 )) "${hex:1}"
}

# EC P-256 key, PKCS#8 PEM ("BEGIN PRIVATE KEY").
newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
    chmod 600 "$1"
}

# Minimal config so no distro openssl.cnf defaults leak into the certs.
cat > "$TMP/req.cnf" <<'CNF'
[ req ]
distinguished_name = dn
prompt             = no
[ dn ]
CN = placeholder
[ ca_ext ]
basicConstraints     = critical, CA:true
keyUsage             = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF

# make_ca NAME "COMMON NAME"
make_ca() {
    newkey "$1.key"
    openssl req -new -x509 -config "$TMP/req.cnf" -extensions ca_ext \
        -key "$1.key" -subj "/CN=$2" -days "$DAYS" -sha256 \
        -set_serial "$(serial)" -out "$1.pem"
}

# make_leaf NAME CA_NAME "COMMON NAME" "SAN list"
make_leaf() {
    newkey "$1.key"
    cat > "$TMP/$1.ext" <<EXT
basicConstraints       = critical, CA:false
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = $4
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
EXT
    openssl req -new -config "$TMP/req.cnf" -key "$1.key" -subj "/CN=$3" \
        -out "$TMP/$1.csr"
    openssl x509 -req -in "$TMP/$1.csr" -CA "$2.pem" -CAkey "$2.key" \
        -set_serial "$(serial)" -days "$DAYS" -sha256 \
        -extfile "$TMP/$1.ext" -out "$1.pem"
}

make_ca ca "dnsward test CA"
make_leaf server ca localhost \
    "DNS:localhost, DNS:dns.test, IP:127.0.0.1, IP:::1"
cat server.pem ca.pem > server-chain.pem
make_leaf wrong-name ca wrong.invalid "DNS:wrong.invalid"

make_ca untrusted-ca "dnsward untrusted test CA"
make_leaf untrusted untrusted-ca localhost \
    "DNS:localhost, IP:127.0.0.1, IP:::1"

# Intermediate files live in $TMP (removed by the trap); also drop any
# stray serial files an older openssl may have left behind.
rm -f ./*.srl ./*.csr ./*.ext

# Test keys are committed and public; make them readable by any test runner.
chmod 644 ./*.key

openssl verify -CAfile ca.pem server.pem wrong-name.pem
openssl verify -CAfile untrusted-ca.pem untrusted.pem
echo "certs written to $DIR"
