#!/usr/bin/env bash
# make-test-ca.sh: a throw-away PKI for the broker's TLS listener, for tests and bench rigs.
#
#   deploy/tls/make-test-ca.sh OUTDIR [SITE/CABINET ...]
#
# Default identities: fr-lyon-07/cab-01 and fr-lyon-07/cab-02. Writes into OUTDIR:
#
#   ca.crt ca.key                      the test CA (trust anchor of the broker and clients)
#   server.crt server.key              the broker; SAN IP:127.0.0.1, DNS:localhost
#   cabinet-SITE-CABINET.crt/.key      one client identity per cabinet, CN = "SITE/CABINET"
#   dispatch.crt dispatch.key          central dispatch, CN = "dispatch"
#   dispatch-2.crt dispatch-2.key      a second dispatch instance, CN = "dispatch.2"
#   technician-SITE.crt/.key           the technicians of each SITE above,
#                                      CN = "technician.SITE"
#   monitoring.crt monitoring.key      read-only supervision, CN = "monitoring"
#   other-ca/ca.crt other-ca/ca.key    an unrelated CA the broker does not trust
#   other-ca/client.crt/.key           a client cert from that CA, CN = the first cabinet's
#   expired.crt expired.key            the first cabinet's CN, signed by the real CA,
#                                      valid 2020-01-01..2020-01-02 only
#   revoked.crt revoked.key            the first cabinet's CN, signed by the real CA, valid,
#                                      and revoked (a stolen cabinet's certificate)
#   crl.pem                            the CA's revocation list (revoked.crt on it), valid
#                                      30 days: the broker's crlfile
#   ca-db/                             the CA's database (index.txt, serial, crlnumber,
#                                      openssl.cnf): what deploy/tls/crl.sh needs to revoke
#                                      a certificate and refresh crl.pem
#
# The roles and what each may do: deploy/mosquitto/acl. Role CNs never contain "/", so a
# role can never match a cabinet's own-topic patterns.
#
# Why the CN is "SITE/CABINET": the broker runs with use_identity_as_username, so the CN
# becomes the MQTT username, and the ACL pattern lockers/v1/%u/... then expands to exactly
# that cabinet's topic root lockers/v1/SITE/CABINET/... . Site and cabinet ids are
# [a-z0-9-]{1,32}, so the CN can never contain the wildcards + or # (mosquitto denies such
# usernames anyway) nor more than one "/".
#
# Production uses the same layout with a CA kept offline; this script is for tests: the
# keys are unencrypted EC P-256 keys, generated fresh each run, mode 0600.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUTDIR [SITE/CABINET ...]" >&2
    exit 2
fi
out=$1
shift
identities=("$@")
if [[ ${#identities[@]} -eq 0 ]]; then
    identities=("fr-lyon-07/cab-01" "fr-lyon-07/cab-02")
fi
for ident in "${identities[@]}"; do
    if [[ ! $ident =~ ^[a-z0-9-]{1,32}/[a-z0-9-]{1,32}$ ]]; then
        echo "not a SITE/CABINET identity: $ident" >&2
        exit 2
    fi
done

umask 077
mkdir -p "$out/other-ca"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# EC keys: fast to generate and small; mosquitto and Python's ssl both accept them.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A self-signed CA certificate: $1 key, $2 cert, $3 CN.
make_ca() {
    newkey "$1"
    openssl req -new -x509 -key "$1" -out "$2" -days 3650 -subj "/CN=$3" \
        -addext "basicConstraints=critical,CA:true" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# A leaf signed by a CA: $1 CA cert, $2 CA key, $3 key out, $4 cert out, $5 CN, $6 extensions.
make_leaf() {
    local csr="$work/leaf.csr" ext="$work/leaf.ext"
    newkey "$3"
    # The "/" inside a CN must be escaped in -subj, which otherwise splits RDNs on it.
    openssl req -new -key "$3" -out "$csr" -subj "/CN=${5//\//\\/}" 2>/dev/null
    printf '%s\n' "$6" >"$ext"
    openssl x509 -req -in "$csr" -CA "$1" -CAkey "$2" -CAcreateserial -out "$4" \
        -days 825 -sha256 -extfile "$ext" 2>/dev/null
}

client_ext='basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'
server_ext='basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost'

make_ca "$out/ca.key" "$out/ca.crt" "locker test CA"
make_leaf "$out/ca.crt" "$out/ca.key" "$out/server.key" "$out/server.crt" "localhost" "$server_ext"
for ident in "${identities[@]}"; do
    name="cabinet-${ident//\//-}"
    make_leaf "$out/ca.crt" "$out/ca.key" "$out/$name.key" "$out/$name.crt" "$ident" "$client_ext"
done
make_leaf "$out/ca.crt" "$out/ca.key" "$out/dispatch.key" "$out/dispatch.crt" "dispatch" \
    "$client_ext"
make_leaf "$out/ca.crt" "$out/ca.key" "$out/dispatch-2.key" "$out/dispatch-2.crt" "dispatch.2" \
    "$client_ext"
make_leaf "$out/ca.crt" "$out/ca.key" "$out/monitoring.key" "$out/monitoring.crt" "monitoring" \
    "$client_ext"
for site in $(printf '%s\n' "${identities[@]}" | cut -d/ -f1 | sort -u); do
    make_leaf "$out/ca.crt" "$out/ca.key" "$out/technician-$site.key" \
        "$out/technician-$site.crt" "technician.$site" "$client_ext"
done

# An unrelated CA issuing a certificate with a legitimate cabinet's CN: the broker must
# refuse it, since only the chain decides, never the name.
make_ca "$out/other-ca/ca.key" "$out/other-ca/ca.crt" "unrelated CA"
make_leaf "$out/other-ca/ca.crt" "$out/other-ca/ca.key" "$out/other-ca/client.key" \
    "$out/other-ca/client.crt" "${identities[0]}" "$client_ext"

# The CA's database: "openssl ca" needs it to set a start date in the past (OpenSSL 3.0's
# "x509 -req" cannot), to revoke, and to sign the revocation list (deploy/tls/crl.sh).
db="$out/ca-db"
mkdir -p "$db/newcerts"
: >"$db/index.txt"
echo 1000 >"$db/serial"
echo 1000 >"$db/crlnumber"
cat >"$db/openssl.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
dir = $db
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $out/ca.crt
private_key = $out/ca.key
default_md = sha256
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
x509_extensions = client_ext
[policy_any]
commonName = supplied
[client_ext]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
EOF
newkey "$out/expired.key"
openssl req -new -key "$out/expired.key" -out "$work/expired.csr" \
    -subj "/CN=${identities[0]//\//\\/}" 2>/dev/null
openssl ca -batch -notext -config "$db/openssl.cnf" -in "$work/expired.csr" \
    -out "$out/expired.crt" -startdate 20200101000000Z -enddate 20200102000000Z 2>/dev/null

# A valid certificate with the first cabinet's CN, then revoked: what a stolen cabinet's
# certificate looks like once its replacement is issued. The broker must refuse it.
newkey "$out/revoked.key"
openssl req -new -key "$out/revoked.key" -out "$work/revoked.csr" \
    -subj "/CN=${identities[0]//\//\\/}" 2>/dev/null
openssl ca -batch -notext -config "$db/openssl.cnf" -in "$work/revoked.csr" \
    -out "$out/revoked.crt" -days 825 2>/dev/null
bash "$(dirname "$0")/crl.sh" "$db" "$out/crl.pem" --revoke "$out/revoked.crt" >/dev/null

# Certificates are public; keys stay 0600 (umask above).
chmod 0644 "$out"/*.crt "$out"/other-ca/*.crt "$out/crl.pem"
rm -f "$out"/*.srl "$out"/other-ca/*.srl
echo "test PKI written to $out"
