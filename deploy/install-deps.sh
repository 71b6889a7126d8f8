#!/usr/bin/env bash
# Installs what building, running and testing Ratchet need on Debian, and nothing that is
# already there, so it is safe to run again. One argument says how much:
#
#   deploy/install-deps.sh dev     build and run `ratchet dev` (deploy/dev.sh)
#   deploy/install-deps.sh test    dev, plus every peer the tests and benchmarks start
#                                  (tests/run.sh, bench/run.sh)
#
# dev:
#   clang, libclang-dev:         RocksDB's C++ build and its bindgen
#   protobuf-compiler,
#   libprotobuf-dev:             protoc and google/protobuf/*.proto (a Recommends of
#                                protobuf-compiler, so not there with --no-install-recommends)
#   swaks, libnet-ssleay-perl:   the README's first look sends mail with swaks; Net::SSLeay
#                                (a Recommends again) gives it STARTTLS
# test adds:
#   postfix:                     real SMTP peers (smtp-sink, smtp-source, a private Postfix)
#   jq:                          the Helm chart's scripts, run by tests/helm_rendered.rs
#   chromium:                    renders the report page headless in tests/report_page.rs
#   openssl:                     reads the certificates `ratchet certs` writes
#   curl:                        the decider's pages over HTTPS with client certificates
#   iproute2, iptables:          the fault suite's network namespaces, links and partitions
#   debootstrap:                 the image's base, made from Debian's packages by
#                                deploy/base-images.sh (tests/image.rs builds the image)
#   redis-server, redis-tools,
#   etcd-server, etcd-client:    the anchors of bench/run.sh
#   prometheus:                  promtool, which helm/check.py runs on the chart's alert rules
#                                and their unit tests
#   python3-pip:                 only where python3 has no pip
#   python3-venv:                only where python3 cannot make a virtualenv (Debian's
#                                python3 needs it for ensurepip)
# and, with pip, what helm/check.py needs: helm-python-sdk (Helm's Go SDK, in-process) and
# kubernetes-validate (the Kubernetes schemas), pinned because check.py uses their APIs;
# and checkov, pinned, in its own virtualenv ($RATCHET_VENV, default
# ~/.cache/ratchet/venv), where its many pinned dependencies cannot clash with anything.
#
#   docker.io:                   a Docker Engine for tests/image.rs (builds and runs the
#                                image), only where no `docker` is installed; started when
#                                none answers (systemctl, or dockerd in the background)
#
# Servers among these (Postfix, Redis, etcd, Prometheus) are installed for their programs
# only: none is configured, started or enabled; the tests and benchmarks start their own on
# loopback.
set -euo pipefail

profile="${1:-test}"
dev_packages=(clang libclang-dev protobuf-compiler libprotobuf-dev swaks libnet-ssleay-perl)
test_packages=(postfix haproxy jq chromium openssl curl iproute2 iptables debootstrap redis-server redis-tools etcd-server etcd-client prometheus)
services=(postfix haproxy redis-server etcd prometheus)
case "$profile" in
  dev) packages=("${dev_packages[@]}") ;;
  test) packages=("${dev_packages[@]}" "${test_packages[@]}") ;;
  *)
    echo "install-deps.sh: unknown profile '$profile' (dev or test)" >&2
    exit 2
    ;;
esac
if [ "$profile" = test ]; then
  command -v docker >/dev/null || packages+=(docker.io)
  command -v python3 >/dev/null || packages+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  # policy-rc.d answering 101 keeps the maintainer scripts from starting any service while
  # we install; it is removed again however the install ends.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # On a systemd machine the packages enable their units for the next boot: undo that.
  if [ -d /run/systemd/system ]; then
    for unit in "${services[@]}"; do
      if systemctl list-unit-files "$unit.service" >/dev/null 2>&1; then
        $sudo systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

[ "$profile" = test ] || exit 0

if ! $sudo docker info >/dev/null 2>&1; then
  echo "starting the Docker Engine (tests/image.rs needs one)" >&2
  if [ -d /run/systemd/system ]; then
    $sudo systemctl start docker
  else
    $sudo sh -c 'dockerd >/var/log/ratchet-dockerd.log 2>&1 &'
  fi
  for _ in $(seq 60); do
    $sudo docker info >/dev/null 2>&1 && break
    sleep 1
  done
  $sudo docker info >/dev/null 2>&1 || { echo "install-deps.sh: the Docker Engine did not start (see /var/log/ratchet-dockerd.log)" >&2; exit 1; }
fi

python_packages=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0)
if ! python3 - "${python_packages[@]}" 2>/dev/null <<'PY'; then
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in (p.split("==") for p in sys.argv[1:])))
PY
  echo "installing: ${python_packages[*]} (pip)" >&2
  # Debian's own python3 refuses pip outside a virtualenv (PEP 668); these two packages
  # have no Debian counterparts, so there they go in with --break-system-packages.
  python3 -m pip install --quiet "${python_packages[@]}" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "${python_packages[@]}"
fi

# checkov for helm/check.py, in a virtualenv of its own: Debian's python3 refuses pip
# installs outside one (PEP 668), and checkov pins dozens of dependencies.
checkov_version=3.3.30
venv="${RATCHET_VENV:-$HOME/.cache/ratchet/venv}"
if [ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$checkov_version" ]; then
  echo "installing: checkov==$checkov_version (pip, in the virtualenv $venv)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$checkov_version"
fi
