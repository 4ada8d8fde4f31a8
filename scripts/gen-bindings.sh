#!/usr/bin/env bash
# Builds the client library (cdylib) and generates its Python, Kotlin and Swift bindings
# with the uniffi-bindgen of the same uniffi version (library mode), into
# client-ffi/bindings/{python,kotlin,swift} (gitignored: generated, never edited).
# The Python folder also gets the shared library, so `import buurtsync_client` works
# with PYTHONPATH=client-ffi/bindings/python.
set -euo pipefail
cd "$(dirname "$0")/.."

out=client-ffi/bindings
# The whole workspace, as scripts/test.sh builds it: building one package alone would
# resolve other features for shared dependencies and rebuild them.
cargo build --workspace
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
case "$(uname -s)" in
  Darwin) lib="$target_dir/debug/libbuurtsync_client.dylib" ;;
  *) lib="$target_dir/debug/libbuurtsync_client.so" ;;
esac
bindgen="$target_dir/debug/uniffi-bindgen"

rm -rf "$out"
for language in python kotlin swift; do
  "$bindgen" generate --library "$lib" --language "$language" --out-dir "$out/$language" --no-format
done
cp "$lib" "$out/python/"
echo "bindings in $out/{python,kotlin,swift}"
