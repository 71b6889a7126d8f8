#!/usr/bin/env bash
# Installs the Debian packages that building and testing Ratchet need, and nothing when
# they are already there, so it is safe to run again.
#   clang, libclang-dev: RocksDB's C++ build and its bindgen
#   protobuf-compiler:   protoc, for proto/
#   postfix, swaks:      real SMTP peers for the edge tests (smtp-sink, smtp-source, swaks)
#   jq:                  the Helm chart's scripts, run by tests/helm_rendered.rs as in the image
#   chromium:            renders the decider's report page headless in tests/report_page.rs
#   redis-server, redis-tools, etcd-server, etcd-client: the anchors of bench/run.sh
#                        (redis-benchmark, a three-node etcd; etcdctl to poke at it)
#   python3, pip:        helm/check.py (only where no python3 is on PATH at all)
# and, with pip, what helm/check.py needs: helm-python-sdk (Helm's Go SDK, in-process) and
# kubernetes-validate (the Kubernetes schemas), pinned because check.py uses their APIs.
set -euo pipefail

packages=(clang libclang-dev protobuf-compiler postfix swaks jq chromium redis-server redis-tools etcd-server etcd-client)
command -v python3 >/dev/null || packages+=(python3 python3-pip)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  # Postfix is installed for its tools only: no mail system is configured or started.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python_packages=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0)
if ! python3 - "${python_packages[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in (p.split("==") for p in sys.argv[1:])))
PY
then
  echo "installing: ${python_packages[*]} (pip)" >&2
  # Debian's own python3 refuses pip outside a virtualenv (PEP 668); these two packages
  # have no Debian counterparts, so there they go in with --break-system-packages.
  python3 -m pip install --quiet "${python_packages[@]}" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "${python_packages[@]}"
fi
