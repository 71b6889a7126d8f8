#!/usr/bin/env bash
# Installs the Debian packages that building and testing Ratchet need, and nothing when
# they are already there, so it is safe to run again.
#   clang, libclang-dev: RocksDB's C++ build and its bindgen
#   protobuf-compiler:   protoc, for proto/
#   postfix, swaks:      real SMTP peers for the edge tests (smtp-sink, smtp-source, swaks)
set -euo pipefail

packages=(clang libclang-dev protobuf-compiler postfix swaks)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
# Postfix is installed for its tools only: no mail system is configured or started.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
