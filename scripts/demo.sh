#!/usr/bin/env bash
# pallet's main job on an embedded default, offline: build a busybox image from
# Debian's busybox-static into the image store and run a container from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
pallet image build-busybox --tag busybox:latest
pallet run --rm busybox echo "hello from a pallet container"
