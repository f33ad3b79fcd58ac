#!/usr/bin/env bash
# Host packages the namespace tests (tests/tests/*.rs, daemon/tests/*.rs) and tests/demo.sh need:
# ip/ss (iproute2), nft (nftables) for the NAT router namespace, sysctl (procps), ping
# (iputils-ping), tcpdump for the underlay capture and tshark to dissect it
# (daemon/tests/e2e_capture.rs, e2e_selfcheck.rs), iperf3 for TCP load (daemon/tests/rekey_load.rs),
# curl and promtool (Debian package prometheus, the only one that ships it) for the scrapes of
# daemon/tests/metrics.rs, setpriv (util-linux, essential but named) to run dmvpnctl with chosen
# supplementary groups (daemon/tests/ctl.rs), conntrack to make a NAT forget its mappings
# (daemon/tests/faults.rs).
# Debian/Ubuntu, run as root.
# Idempotent: installs nothing when everything is present. /dev/net/tun must exist (tun module).
set -euo pipefail

PACKAGES=(iproute2 nftables procps iputils-ping tcpdump tshark frr iperf3 curl prometheus util-linux conntrack)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Only promtool is wanted: where systemd runs, the package starts a Prometheus server that
    # scrapes this host. Stop it when this script is what installed it.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus.service 2>/dev/null || true
    fi
else
    echo "install-deps: all packages present"
fi

if [[ ! -c /dev/net/tun ]]; then
    modprobe tun 2>/dev/null || true
fi
[[ -c /dev/net/tun ]] || { echo "install-deps: /dev/net/tun is missing" >&2; exit 1; }
