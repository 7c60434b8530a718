#!/usr/bin/env bash
# Run the whole test suite as root on Debian 12: set up, lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
