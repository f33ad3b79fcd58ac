#!/usr/bin/env bash
# The interop suite in one command (CI and humans):  sudo tests/interop/run-all.sh
# Installs host packages if missing, builds or reuses the cached VM image, runs every scenario in turn,
# prints "interop: N passed, M failed" and exits non-zero if any failed. IX_SCENARIOS="a b" runs a subset.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCENARIOS=${IX_SCENARIOS:-stock-rig dmvpnd-spoke dmvpnd-spoke-nat wrong-keys dpd hub-restart rekey dmvpnd-hub spoke-to-spoke ospf-frr systemd-unit}

"$HERE/install-deps.sh" || { echo "interop: host dependencies could not be installed"; exit 1; }
t=$SECONDS
"$HERE/build-image.sh" >/dev/null || { echo "interop: image build failed"; exit 1; }
echo "interop: image ready in $((SECONDS - t))s"

passed=0 failed=0 failures=()
for s in $SCENARIOS; do
    t=$SECONDS
    if "$HERE/$s.sh"; then
        passed=$((passed + 1)); echo "interop: $s passed in $((SECONDS - t))s"
    else
        failed=$((failed + 1)); failures+=("$s"); echo "interop: $s FAILED after $((SECONDS - t))s"
    fi
done
((failed == 0)) || echo "interop: failed scenarios: ${failures[*]}"
echo "interop: $passed passed, $failed failed"
((failed == 0))
