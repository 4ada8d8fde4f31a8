#!/usr/bin/env bash
# The JVM test of the client library: makes a private CA and server certificates
# (openssl), then compiles the GENERATED Kotlin bindings with the Android example code
# (mobile-examples/android/jvm/pom.xml: kotlin-maven-plugin, JNA, kotlinx-coroutines,
# JUnit 5) and runs the JUnit test that drives the real libbuurtsync_client.so against a
# real `buurtsync serve --tls-cert/--tls-key`. Needs scripts/gen-bindings.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mvn >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
test -f client-ffi/bindings/kotlin/uniffi/buurtsync_client/buurtsync_client.kt \
  || { echo "run scripts/gen-bindings.sh first" >&2; exit 1; }

certs=$(mktemp -d "${TMPDIR:-/tmp}/buurtsync-certs.XXXXXX")
trap 'rm -rf "$certs"' EXIT
# A private CA (a gemeente's), a server certificate for 127.0.0.1 signed by it, and one
# for another host name (the wrong-host test).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$certs/ca.key" -out "$certs/ca.pem" -subj "/CN=buurtsync test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$certs/$1.key" -out "$certs/$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$2" > "$certs/$1.ext"
  openssl x509 -req -in "$certs/$1.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 2 -out "$certs/$1.pem" -extfile "$certs/$1.ext" 2>/dev/null
}
issue server "IP:127.0.0.1,DNS:localhost"
issue wronghost "DNS:other.example"

# The Kotlin compiler in Maven's own process (kotlin.compiler.daemon=false): its daemon
# would outlive the test run (a JVM of ≈ 850 MiB, found still running after CI), and a
# test run stops what it starts.
mvn -B -q -f mobile-examples/android/jvm/pom.xml test \
  -Dkotlin.compiler.daemon=false \
  -Dbuurtsync.lib.dir="$target_dir/debug" \
  -Dbuurtsync.bin="$target_dir/debug/buurtsync" \
  -Dbuurtsync.certs="$certs"
# Surefire's own summary (mvn -q hides it): the counts from its reports.
python3 - mobile-examples/android/jvm/target/surefire-reports <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
tests = failed = skipped = 0
for f in pathlib.Path(sys.argv[1]).glob("TEST-*.xml"):
    r = ET.parse(f).getroot()
    tests += int(r.get("tests")); skipped += int(r.get("skipped"))
    failed += int(r.get("failures")) + int(r.get("errors"))
print(f"jvm: {tests - failed - skipped} passed, {failed} failed")
PY
