#!/usr/bin/env bash
# OCI runtime conformance for pallet-runc, runc, crun, ... (run as root).
#
#   scripts/conformance.sh [--suite auto|upstream|native] [--timeout S] [--only a,b] [RUNTIME_PATH...]
#
# RUNTIME_PATH: a name on PATH or a path (default: runc); e.g.
#   scripts/conformance.sh .venv/bin/pallet-runc runc crun
#
# Suites:
#   upstream  opencontainers/runtime-tools validation programs, built offline with
#             Debian's Go in GOPATH mode against Debian's golang-*-dev packages.
#             Needs a full runtime-tools source tree (RUNTIME_TOOLS_SRC=DIR); Debian's
#             -dev package lacks validation/ and cmd/runtimetest (docs/conformance.md).
#   native    pallet's own checks (scripts/conformance/native.py): same lifecycle and
#             config areas, driven through the runtime CLI, checked with busybox.
#   auto      upstream when its source is available, else native (default).
# Build products are cached in /var/cache/pallet-conformance ($PALLET_CONFORMANCE_CACHE).
# Exit status: 0 all passed, 1 some test failed, 2 setup problem.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/conformance"
CACHE="${PALLET_CONFORMANCE_CACHE:-/var/cache/pallet-conformance}"
export PALLET_CONFORMANCE_CACHE="$CACHE"
SUITE=auto
TIMEOUT=30
ONLY=""
RUNTIMES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --suite) SUITE="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) RUNTIMES+=("$1"); shift ;;
    esac
done
[ ${#RUNTIMES[@]} -gt 0 ] || RUNTIMES=(runc)
[ "$(id -u)" = 0 ] || { echo "conformance.sh: run as root" >&2; exit 2; }
mkdir -p "$CACHE"

# --- packages (idempotent: apt only runs when something is missing)
PKGS=(busybox-static runc golang-go util-linux python3
      golang-github-opencontainers-runtime-tools-dev golang-github-opencontainers-specs-dev
      golang-github-mrunalp-fileutils-dev golang-github-hashicorp-go-multierror-dev
      golang-github-satori-go.uuid-dev golang-github-google-uuid-dev golang-github-sirupsen-logrus-dev
      golang-github-urfave-cli-dev golang-github-xeipuuv-gojsonschema-dev golang-gocapability-dev
      golang-golang-x-sys-dev golang-github-blang-semver-dev golang-github-opencontainers-selinux-dev
      golang-gopkg-yaml.v2-dev)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "# apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# resolve runtime paths to absolute (relative ones are relative to the caller's cwd)
ABS=()
for r in "${RUNTIMES[@]}"; do
    case "$r" in */*) ABS+=("$(realpath -m "$r")") ;; *) ABS+=("$r") ;; esac
done

OUT="$CACHE/results"
mkdir -p "$OUT"
rm -f "$OUT"/*.json
ONLY_ARGS=()
[ -n "$ONLY" ] && ONLY_ARGS=(--only "$ONLY")

run_upstream() {
    local src="$1" key
    key="$(cd "$src" && find validation cmd/runtimetest -name '*.go' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-12)"
    local build="$CACHE/upstream-$key"
    echo "# runtime-tools source: $src (build cache $build)"
    python3 "$LIB/upstream.py" build "$src" "$build"
    python3 "$LIB/upstream.py" run "$build" "${ABS[@]}" --timeout "$TIMEOUT" --json "$OUT/upstream.json" "${ONLY_ARGS[@]}"
}

case "$SUITE" in
    upstream|auto)
        if SRC="$(python3 "$LIB/upstream.py" find)"; then
            run_upstream "$SRC"
        else
            echo "# runtime-tools validation suite unavailable offline on this machine:"
            echo "$SRC" | sed 's/^/#   /'
            [ "$SUITE" = upstream ] && exit 2
            echo "# falling back to pallet's native checks (scripts/conformance/native.py)"
            python3 "$LIB/native.py" --timeout "$TIMEOUT" --json "$OUT/native.json" "${ONLY_ARGS[@]}" "${ABS[@]}"
        fi ;;
    native)
        python3 "$LIB/native.py" --timeout "$TIMEOUT" --json "$OUT/native.json" "${ONLY_ARGS[@]}" "${ABS[@]}" ;;
    *) echo "unknown --suite $SUITE" >&2; exit 2 ;;
esac
echo
python3 "$LIB/table.py" "$OUT"/*.json
