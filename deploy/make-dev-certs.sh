#!/usr/bin/env bash
# Makes a development CA and the certificates to run the pair over TLS and mutual TLS, with the
# openssl command line. Development only: the CA key sits next to the certificates.
#
#   deploy/make-dev-certs.sh [DIR]      (default: dev-certs/, created; existing files are kept)
#
# Files (PEM, EC P-256, valid 30 days):
#   ca.pem, ca.key              the development CA (trust it: --ca-cert, grpcurl -cacert)
#   server.pem, server.key      order-service and the gateway: 127.0.0.1, localhost,
#                               order-service, status-client
#   billing.pem, billing.key    a client certificate, URI SAN spiffe://order-status.dev/billing
#   gateway.pem, gateway.key    a client certificate, DNS SAN status-client.internal
#   healthcheck.pem, .key       a client certificate, DNS SAN order-service.healthcheck (for
#                               `order-service healthcheck` under mutual TLS)
#
# The keys the TLS stack mounts into its containers (server, gateway, healthcheck) are readable
# by everyone (0644): the containers run as user 10001, not as you. ca.key and billing.key stay
# 0600. Development only, like everything here.
set -euo pipefail

readonly DIR="${1:-dev-certs}"
readonly DAYS=30
mkdir -p "$DIR"
cd "$DIR"

ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

if [[ ! -f ca.pem ]]; then
    openssl req -x509 "${ec[@]}" -days "$DAYS" -subj "/CN=order-status development CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.pem 2>/dev/null
fi

# issue NAME SUBJECT_ALT_NAME EXTENDED_KEY_USAGE
issue() {
    local name=$1 san=$2 usage=$3
    [[ -f "$name.pem" ]] && return
    openssl req "${ec[@]}" -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectAltName=%s\nextendedKeyUsage=%s\n' \
        "$san" "$usage" >"$name.ext"
    openssl x509 -req -days "$DAYS" -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

issue server "IP:127.0.0.1,DNS:localhost,DNS:order-service,DNS:status-client" serverAuth
issue billing "URI:spiffe://order-status.dev/billing" clientAuth
issue gateway "DNS:status-client.internal" clientAuth
issue healthcheck "DNS:order-service.healthcheck" clientAuth
chmod 600 ca.key billing.key
chmod 644 server.key gateway.key healthcheck.key
echo "certificates in $(pwd)"
