#!/usr/bin/env bash
# A newcomer's first run: builds dmvpnd, starts a hub and a spoke from conf/hub.toml and
# conf/spoke.toml in two throwaway network namespaces joined by a veth "WAN" cable, shows the
# spoke registering, pings the hub over the tunnel, and removes everything on exit.
#
#   sudo tests/demo.sh          (root: namespaces, TUN; no cloud account, nothing outside them)
#
# The examples already use the documentation addresses 198.51.100.1 (hub) and .3 (spoke) on
# eth0, so they run unchanged but for a control socket each (two daemons on one machine); a
# secrets file with fresh random keys is generated beside them (0600).
set -euo pipefail

cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "demo: run as root (sudo $0)" >&2; exit 1; }
# What the demo needs (ip, ping, nft, …) comes from the same idempotent installer the tests use.
if ! command -v ip >/dev/null || ! command -v ping >/dev/null; then
    echo "== installing host packages (tests/install-deps.sh)"
    tests/install-deps.sh
fi
command -v cargo >/dev/null || { echo "demo: cargo is missing: install Rust 1.88 or newer (rustup; Debian 13's 1.85 is too old) and run with it on root's PATH (sudo -i, or sudo env PATH=\"\$PATH\" $0)" >&2; exit 1; }

echo "== building dmvpnd and dmvpnctl (cargo build --release -p dmvpnd -p dmvpnctl)"
cargo build --release -q -p dmvpnd -p dmvpnctl
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
dmvpnd="${target_dir:-target}/release/dmvpnd"
dmvpnctl="${target_dir:-target}/release/dmvpnctl"

tag="dmvpn-demo-$$"
hub="$tag-hub" spoke="$tag-spoke"
work=$(mktemp -d "/tmp/$tag.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$hub" 2>/dev/null || true
    ip netns del "$spoke" 2>/dev/null || true
    rm -rf "$work"
    echo "== cleaned up (namespaces $hub, $spoke and $work removed)"
}
trap cleanup EXIT

echo "== namespaces $hub (198.51.100.1) and $spoke (198.51.100.3), linked by a veth pair"
ip netns add "$hub"
ip netns add "$spoke"
ip link add "h$$" netns "$hub" type veth peer name "s$$" netns "$spoke"
for ns in "$hub" "$spoke"; do ip -n "$ns" link set lo up; done
ip -n "$hub" link set "h$$" name eth0
ip -n "$spoke" link set "s$$" name eth0
ip -n "$hub" addr add 198.51.100.1/24 dev eth0
ip -n "$spoke" addr add 198.51.100.3/24 dev eth0
ip -n "$hub" link set eth0 up
ip -n "$spoke" link set eth0 up

# Configuration: the examples as shipped plus a control socket in the scratch directory, with
# secrets.toml beside them (fresh keys, 0600).
psk=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
nhrp_key=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
for role in hub spoke; do
    mkdir -p "$work/$role"
    cp "conf/$role.toml" "$work/$role/dmvpnd.toml"
    printf '\n[control]\nsocket = "%s"\n' "$work/$role/dmvpnd.sock" >>"$work/$role/dmvpnd.toml"
    (umask 077; sed -e "s/^ANY = .*/ANY = \"$psk\"/" \
        -e "s/^authentication = .*/authentication = \"$nhrp_key\"/" \
        conf/secrets.example.toml >"$work/$role/secrets.toml")
done

echo "== starting dmvpnd (hub, then spoke); logs in $work/*/dmvpnd.log"
ip netns exec "$hub" "$dmvpnd" --foreground --config "$work/hub/dmvpnd.toml" 2>"$work/hub/dmvpnd.log" &
pids+=($!)
ip netns exec "$spoke" "$dmvpnd" --foreground --config "$work/spoke/dmvpnd.toml" 2>"$work/spoke/dmvpnd.log" &
pids+=($!)

# Poll the spoke's log for the registration (at most 30 s).
for _ in $(seq 300); do
    grep -q "NHRP registered with NHS" "$work/spoke/dmvpnd.log" && break
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "demo: dmvpnd exited:" >&2; cat "$work"/*/dmvpnd.log >&2; exit 1; }
    done
    sleep 0.1
done
echo "== hub log"
grep -E "IKE SA up|child SA installed|NHRP registration" "$work/hub/dmvpnd.log" || true
echo "== spoke log"
grep -E "IKE SA up|child SA installed|NHRP registered" "$work/spoke/dmvpnd.log" || true
if ! grep -q "NHRP registered with NHS" "$work/spoke/dmvpnd.log"; then
    echo "demo: FAILED: the spoke did not register within 30 s; full logs:" >&2
    tail -n 30 "$work"/*/dmvpnd.log >&2
    exit 1
fi

echo "== dmvpnctl show dmvpn (hub)"
"$dmvpnctl" --socket "$work/hub/dmvpnd.sock" show dmvpn || true

echo "== ping over the tunnel: spoke 10.250.0.9 -> hub 10.250.0.1"
if ip netns exec "$spoke" ping -c 3 -i 0.5 -W 1 10.250.0.1; then
    echo "== demo OK: the spoke registered and the tunnel carries traffic"
else
    echo "demo: FAILED: no reply over the tunnel" >&2
    exit 1
fi
