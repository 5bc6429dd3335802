#!/usr/bin/env bash
# crl.sh: revoke a client certificate and (re)write the broker's certificate revocation list.
#
#   deploy/tls/crl.sh CA_DB CRL_OUT [--days N] [--revoke CERT ...]
#
# CA_DB is the CA's "openssl ca" database directory (index.txt, serial, crlnumber and an
# openssl.cnf naming the CA's certificate and key; make-test-ca.sh writes one as ca-db/).
# Each --revoke CERT is added to the database first; then a CRL valid N days (default 30)
# is signed by the CA and written to CRL_OUT atomically (a temporary file renamed over it,
# so the broker never reads half a file). It prints the CRL's nextUpdate.
#
# Why a refresh is not optional: the broker checks every client certificate against the
# CRL (crlfile in deploy/mosquitto/mosquitto.conf), and OpenSSL refuses *every* client once
# the CRL's nextUpdate has passed ("CRL has expired"): an expired CRL locks the whole fleet
# out. So run this on a timer well inside N days (weekly for 30 days; docs/security.md),
# then reload the broker (systemctl reload mosquitto, i.e. SIGHUP: mosquitto 2.0 reads the
# CRL again without dropping connected clients), and alert when nextUpdate is less than a
# week away (openssl crl -in CRL_OUT -noout -nextupdate).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 CA_DB CRL_OUT [--days N] [--revoke CERT ...]" >&2
    exit 2
fi
db=$1
crl=$2
shift 2
days=30
revoke=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --days) days=$2; shift 2 ;;
        --revoke) revoke+=("$2"); shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [[ ! $days =~ ^[0-9]+$ ]] || (( days < 1 || days > 90 )); then
    echo "--days must be 1..90" >&2
    exit 2
fi
conf="$db/openssl.cnf"
[[ -f $conf ]] || { echo "no $conf: not a CA database" >&2; exit 2; }

for cert in ${revoke[@]+"${revoke[@]}"}; do
    openssl ca -config "$conf" -revoke "$cert" -crl_reason keyCompromise 2>/dev/null \
        || { echo "could not revoke $cert" >&2; exit 1; }
done
tmp=$(mktemp "$(dirname "$crl")/.crl.XXXXXX")
trap 'rm -f "$tmp"' EXIT
openssl ca -config "$conf" -gencrl -crldays "$days" -out "$tmp" 2>/dev/null
chmod 0644 "$tmp"
mv "$tmp" "$crl"
trap - EXIT
openssl crl -in "$crl" -noout -nextupdate
