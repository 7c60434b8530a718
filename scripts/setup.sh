#!/usr/bin/env bash
# Install everything pallet and its tests need on Debian 12, as root: system
# packages (the kernel-facing tools and the peers we test against) and a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(busybox-static libseccomp2 libseccomp-dev iptables iproute2 containernetworking-plugins
          docker-registry skopeo umoci runc crun runsc podman containerd procps apache2-utils debootstrap
          golang-go golang-github-docker-spdystream-dev  # Go: a real SPDY client in tests
          dnsmasq-base  # a real upstream for the embedded DNS server's tests
          openssh-client  # ssh-agent and ssh-add: `build --ssh` with key files, and its tests
          python3 python3-venv)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The docker-registry package starts a system registry on :5000; tests run their own.
if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

# The venv is made from Debian's CPython, not whichever python3 is first in PATH
# (this machine's is a pyenv build: shared libpython, no PGO/LTO). Debian's runs
# pallet's own code ~10% faster, and pallet-runc starts several times a container.
PY=/usr/bin/python3
if [ -x .venv/bin/python ] && ! grep -qx "home = ${PY%/*}" .venv/pyvenv.cfg; then
  echo "setup: remaking .venv with $PY"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
# compat mode: a plain path in a .pth, not an import hook, which costs ~15 ms on
# every interpreter start (pallet-runc starts several times per container).
.venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
echo "setup: ok ($(.venv/bin/pallet --version))"
