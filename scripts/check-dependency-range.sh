#!/usr/bin/env bash
# Runs the protocol tests on the lowest and the highest releases of uvicorn and websockets
# that pyproject.toml allows, every pairing of the two, in a throwaway venv with agenthost
# installed, and prints one line per pairing. Exit status 1 if any pairing fails.
#
#   scripts/check-dependency-range.sh                 # the pairings pyproject.toml allows
#   PACKAGES="uvicorn websockets starlette" scripts/check-dependency-range.sh
#   scripts/check-dependency-range.sh "uvicorn==0.52.1 websockets==17.4"   # given pairings
#
# PYTHON picks the interpreter (python3). pip's cache is reused; only the pinned packages
# are reinstalled between pairings.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PACKAGES=${PACKAGES:-uvicorn websockets}
TESTS=(
    tests/test_ws_protocol.py tests/test_server_protocols.py tests/test_eager_send.py
    tests/test_accept.py tests/test_websocket.py tests/test_sse_slow_reader.py
)
# What those tests use beyond agenthost's own dependencies (httpx: the test client of
# starlette before 1.5; later ones use httpx2, which agenthost installs).
TEST_DEPS=(pytest pytest-asyncio pytest-timeout httpx)

if ! command -v redis-server >/dev/null 2>&1; then
    echo "error: redis-server is missing (tests/test_websocket.py starts one): make system-deps" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=$work/venv
"$PYTHON" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
echo "installing agenthost and ${TEST_DEPS[*]} into $venv" >&2
if ! "${pip[@]}" install -e . "${TEST_DEPS[@]}" >"$work/install.log" 2>&1; then
    tail -n 20 "$work/install.log" >&2
    exit 1
fi

# Every pairing of the lowest and the highest release each of PACKAGES may take, one line
# each ("uvicorn==0.52.2 websockets==13.1"): bounds from pyproject.toml, releases from the
# index (final releases only).
pairings() {
    local packages
    read -ra packages <<<"$PACKAGES"
    "$venv/bin/python" - "${packages[@]}" <<'EOF'
import itertools
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

with open("pyproject.toml", "rb") as f:
    requirements = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
ends = []
for name in sys.argv[1:]:
    specifier = next((r.specifier for r in requirements if r.name == name), None)
    if specifier is None:
        sys.exit(f"{name} is not among the dependencies in pyproject.toml")
    index = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name],
        capture_output=True, text=True, check=True,
    ).stdout
    listed = index.split("Available versions:")[1].splitlines()[0].split(",")
    allowed = sorted(v for v in map(Version, listed) if v in specifier)
    if not allowed:
        sys.exit(f"no release of {name} matches {specifier}")
    ends.append(dict.fromkeys(f"{name}=={v}" for v in (allowed[0], allowed[-1])))
for pins in itertools.product(*ends):
    print(" ".join(pins))
EOF
}

if (($#)); then
    combinations=("$@")
else
    listed=$(pairings)  # a failure here stops the script (set -e)
    mapfile -t combinations <<<"$listed"
fi

summary() {  # pytest's last line, without its rules: "52 passed in 40.12s"
    tail -n 1 "$1" | sed 's/=//g; s/^ *//; s/ *$//'
}

failed=0
for pins in "${combinations[@]}"; do
    log=$work/$(echo "$pins" | tr ' =' '_-').log
    # shellcheck disable=SC2086  # the pins are separate words
    if ! "${pip[@]}" install $pins >"$log" 2>&1; then
        echo "FAIL $pins (does not install)"
        tail -n 5 "$log" | sed 's/^/     /'
        failed=1
        continue
    fi
    if "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" >"$log" 2>&1; then
        echo "pass $pins: $(summary "$log")"
    else
        echo "FAIL $pins: $(summary "$log")"
        grep -E '^(FAILED|ERROR) ' "$log" | head -n 10 | sed 's/^/     /' || true
        failed=1
    fi
done
exit "$failed"
