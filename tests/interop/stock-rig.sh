#!/usr/bin/env bash
# Proof of the interop rig with stock peers only: a strongSwan+FRR hub VM (ASR1000 equivalent) and a
# strongSwan+FRR spoke VM. Passes when
#   1. both ends list the IKE SA as AES_GCM_16-256/PRF_HMAC_SHA2_512/ECP_256 on UDP 500 (no NAT, no MOBIKE)
#      with a TRANSPORT child SA ESP:AES_GCM_16-256 protecting GRE,
#   2. the hub's NHRP cache holds the spoke as a dynamic entry and the spoke's NHS entry is resolved,
#   3. pings over the tunnel work both ways, and they went through the ESP SA (packet counters grew).
# Exits non-zero with a FAIL line on the first failed check; always tears the rig down (trap).
# Logs of a failed run: $IX_CACHE/logs/stock-rig-<time>/ (or IX_LOGS).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
IX_TEST=stock-rig
RIG="$IX_DIR/rig.sh"
LOGS=${IX_LOGS:-$IX_CACHE/logs/stock-rig-$(date +%Y%m%d-%H%M%S)}
T0=$SECONDS
# keep the logs (and captures) of the last 10 runs
ls -dt "$IX_CACHE"/logs/stock-rig-* 2>/dev/null | tail -n +10 | xargs -r rm -rf || true
status=1

CAPTURE_PID=
stop_capture() { [ -z "$CAPTURE_PID" ] || { kill "$CAPTURE_PID" 2>/dev/null; wait "$CAPTURE_PID" 2>/dev/null; CAPTURE_PID=; }; }
cleanup() {
    stop_capture
    if ((status != 0)); then ix_collect_logs "$LOGS" "$IX_HUB" "$IX_SPOKE" || true; fi
    ((status != 0)) || ix_log "capture of this run: $LOGS/wan.pcap"
    "$RIG" down || true
    ((status == 0)) && ix_log "PASS in $((SECONDS - T0))s" || ix_log "FAILED after $((SECONDS - T0))s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || ix_fail "needs root (network namespaces, taps)"
# One rig per machine at a time (fixed namespace and VM names): wait for a concurrent run to finish,
# then remove what an interrupted one left (lib.sh).
mkdir -p "$IX_CACHE"
ix_lock
for t in qemu-system-x86_64 qemu-img mmdebstrap mke2fs nft; do
    command -v "$t" >/dev/null || ix_fail "$t missing: run tests/interop/install-deps.sh"
done
# A leftover rig from an interrupted run would make "up" fail on the existing taps.
"$RIG" down 2>/dev/null || true

t=$SECONDS
img=$(ix_vm image)
ix_log "image $img ready in $((SECONDS - t))s"
sed 's/^/    /' "$img/versions.txt" >&2

t=$SECONDS
"$RIG" up --no-hub --no-spoke   # just the WAN namespace and bridge, so the capture can start first
# Capture IKE, ESP and GRE on the WAN bridge for the whole run: GRE must never cross it unencrypted.
mkdir -p "$LOGS"
ip netns exec "$IX_WAN_NS" tcpdump -i "$IX_BRIDGE" -nn -U -w "$LOGS/wan.pcap" \
    'ip proto 47 or ip proto 50 or udp port 500 or udp port 4500' 2>/dev/null &
CAPTURE_PID=$!
"$RIG" up || ix_fail "rig up (VM boot or role configuration) failed"
ix_log "hub and spoke booted and configured in $((SECONDS - t))s (hub boot $(cat "$IX_CACHE/vms/$IX_HUB/boot_seconds")s, spoke boot $(cat "$IX_CACHE/vms/$IX_SPOKE/boot_seconds")s)"
t=$SECONDS
versions=$(ix_exec "$IX_HUB" sh -c 'echo "kernel $(uname -r)"; swanctl --version --daemon; swanctl --version;
    vtysh -c "show version" | head -n1; tcpdump --version 2>&1 | head -n1; cat /etc/debian_version')
ix_log "versions in the VM:"
sed 's/^/    /' <<<"$versions" >&2

# 1. IKE SA and transport-mode child SA on both ends.
sa_re='AES_GCM_16-256/PRF_HMAC_SHA2_512/ECP_256'
for vm in "$IX_SPOKE" "$IX_HUB"; do
    ix_wait "$vm" 150 'INSTALLED, TRANSPORT, ESP:AES_GCM_16-256' swanctl --list-sas \
        || ix_fail "$vm: no installed TRANSPORT child SA with ESP:AES_GCM_16-256:"$'\n'"$IX_OUT"
    grep -q "$sa_re" <<<"$IX_OUT" || ix_fail "$vm: IKE SA is not $sa_re:"$'\n'"$IX_OUT"
    grep -q 'ESTABLISHED, IKEv2' <<<"$IX_OUT" || ix_fail "$vm: IKE SA not ESTABLISHED:"$'\n'"$IX_OUT"
    grep -Eq "\[gre\]" <<<"$IX_OUT" || ix_fail "$vm: child SA traffic selectors are not GRE:"$'\n'"$IX_OUT"
    grep -Eq "@ $IX_WAN_NET\.[0-9]+\[500\]" <<<"$IX_OUT" \
        || ix_fail "$vm: IKE did not stay on UDP 500 (NAT or MOBIKE floated it):"$'\n'"$IX_OUT"
done
sa_hub=$IX_OUT
ix_log "IKE SA up after $((SECONDS - t))s:"
grep -E 'ESTABLISHED|AES_GCM|TRANSPORT|\[gre\]' <<<"$sa_hub" | sed 's/^/    /' >&2

# 2. NHRP registration: the spoke is a dynamic entry in the hub's cache, the spoke's NHS is resolved.
ix_wait "$IX_HUB" 180 "dynamic +${IX_SPOKE_TUNNEL//./\\.} +${IX_SPOKE_NBMA//./\\.}" \
    vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: spoke $IX_SPOKE_TUNNEL not registered as dynamic:"$'\n'"$IX_OUT"
ix_log "registration in the hub's cache after $((SECONDS - t))s:"
sed 's/^/    /' <<<"$IX_OUT" >&2
ix_wait "$IX_SPOKE" 60 "${IX_HUB_NBMA//./\\.} +${IX_HUB_TUNNEL//./\\.}" vtysh -c 'show ip nhrp nhs' \
    || ix_fail "spoke: NHS $IX_HUB_TUNNEL not resolved:"$'\n'"$IX_OUT"

# 3. Pings over the tunnel, both directions, and proof that they were carried by ESP.
esp_in_packets() {  # inbound packet count of the (only) child SA of a VM
    ix_exec "$1" swanctl --list-sas | sed -nE 's/^ +in +[0-9a-f]+, +[0-9]+ bytes, +([0-9]+) packets.*/\1/p' | head -n1
}
before=$(esp_in_packets "$IX_HUB")
ix_wait "$IX_SPOKE" 60 ' 0% packet loss' ping -c 3 -i 0.5 -W 2 -I "$IX_SPOKE_TUNNEL" "$IX_HUB_TUNNEL" \
    || ix_fail "spoke -> hub ping over the tunnel failed:"$'\n'"$IX_OUT"
ix_log "spoke -> hub: $(grep -E 'packet loss' <<<"$IX_OUT")"
ix_exec "$IX_HUB" ping -c 3 -i 0.5 -W 2 -I "$IX_HUB_TUNNEL" "$IX_SPOKE_TUNNEL" > /tmp/ix-ping.$$ 2>&1 \
    || { IX_OUT=$(cat /tmp/ix-ping.$$); rm -f /tmp/ix-ping.$$; ix_fail "hub -> spoke ping failed:"$'\n'"$IX_OUT"; }
ix_log "hub -> spoke: $(grep -E 'packet loss' /tmp/ix-ping.$$)"
rm -f /tmp/ix-ping.$$
after=$(esp_in_packets "$IX_HUB")
((after >= before + 6)) || ix_fail "hub: ESP inbound packets $before -> $after, the pings did not use the SA"
ix_log "hub ESP SA inbound packets $before -> $after"

# What crossed the wire: IKE on UDP 500 and ESP, and not one cleartext GRE packet.
sleep 1
stop_capture
count() { tcpdump -r "$LOGS/wan.pcap" -nn "$1" 2>/dev/null | wc -l; }
gre=$(count 'ip proto 47') esp=$(count 'ip proto 50') ike=$(count 'udp port 500') natt=$(count 'udp port 4500')
ix_log "on the WAN bridge: $ike IKE (UDP 500), $natt UDP 4500, $esp ESP, $gre cleartext GRE ($LOGS/wan.pcap)"
((gre == 0)) || ix_fail "$gre GRE packets crossed the WAN unencrypted"
((esp >= 12)) || ix_fail "only $esp ESP packets on the WAN"
((ike >= 4 && natt == 0)) || ix_fail "expected IKE on UDP 500 only (no NAT in this topology)"

# 4. The hooks for dmvpnd: a namespace on the WAN bridge and one behind the NAT namespace reach the hub.
"$RIG" attach dmvpn-ix-probe "$IX_WAN_NET.9/24"
ip netns exec dmvpn-ix-probe ping -c 1 -W 3 "$IX_HUB_NBMA" >/dev/null || ix_fail "attach hook: hub NBMA unreachable"
"$RIG" attach-nat dmvpn-ix-probe-nat
ip netns exec dmvpn-ix-probe-nat ping -c 1 -W 3 "$IX_HUB_NBMA" >/dev/null \
    || ix_fail "attach-nat hook: hub NBMA unreachable through the NAT namespace"
ix_log "attach and attach-nat hooks reach the hub"

status=0
echo "stock-rig: 1 passed, 0 failed"
