#!/usr/bin/env bash
# Rekey under traffic against the stock strongSwan 6 + FRR 10 hub VM (issue 14, item 6): dmvpnd spoke with
# 60 s IKE and Child SA lifetimes (labs only; dmvpnd warns), 100 pings/s toward the hub for 150 s and an
# iperf3 TCP stream to the hub (20 Mbit/s: the hub is a one-vCPU TCG VM) all along. During the
# run dmvpnd rekeys both SAs at its own initiative (lifetime less margin), and the hub rekeys the Child SA
# and the IKE SA at its initiative (`swanctl --rekey`), so dmvpnd is the responder too: it keeps sending on
# the old Child SA until strongSwan deletes it (crates/node/src/rekey_switch.rs). Passes when
#   1. every ping is answered and the TCP stream runs to its end (its retransmissions printed),
#   2. dmvpnd logged at least two Child SA rekeys and one IKE SA rekey, and the hub's `swanctl --rekey`
#      of each succeeded,
#   3. afterwards the hub holds exactly one IKE SA and one Child SA with dmvpnd (none leaked), and dmvpnd
#      counted no replay, integrity or unknown-SPI drop.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init rekey
RUN=150 RATE_INTERVAL=0.01

t=$SECONDS
"$RIG" up --no-hub --no-spoke
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
"$RIG" up --no-spoke || ix_fail "rig up (hub VM) failed"
ix_log "hub booted and configured in $((SECONDS - t))s"
dx_config dut spoke
cfg="$LOGS/dut/dmvpnd.toml"
sed -i -e '/^\[ike\]/,/^\[/ s|^lifetime = [0-9]*|lifetime = 60|' \
       -e '/^\[ipsec\]/,/^\[/ s|^lifetime = [0-9]*|lifetime = 60|' "$cfg"
out=$("$DX_BIN/dmvpnd" --check-config "$cfg" 2>&1) || ix_fail "60 s lifetimes rejected: $out"
grep -q 'below 120 s' <<<"$out" || ix_fail "no warning for 60 s lifetimes: $out"
dx_start dut "$IX_DUT_NS"

ix_wait "$IX_HUB" 120 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_DUT_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not registered:"$'\n'"$IX_OUT"
dx_wait_log dut 30 'NHRP registered with NHS' || ix_fail "dmvpnd did not log 'NHRP registered with NHS'"
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" || ix_fail "ping before the run failed:"$'\n'"$DX_OUT"

# 1. The pings and the TCP stream, with the hub's own rekeys in the middle.
ix_exec "$IX_HUB" iperf3 -s -D -1 -B "$IX_HUB_TUNNEL" >/dev/null || ix_fail "hub: iperf3 -s failed"
ip netns exec "$IX_DUT_NS" iperf3 -c "$IX_HUB_TUNNEL" -B "$IX_DUT_TUNNEL" -t "$RUN" -b 20M -J \
    > "$LOGS/iperf3.json" 2>"$LOGS/iperf3.err" &
iperf_pid=$!
DX_BG_PIDS+=($iperf_pid)
count=$(awk -v r="$RUN" -v i="$RATE_INTERVAL" 'BEGIN { printf "%d", r / i }')
ip netns exec "$IX_DUT_NS" ping -q -c "$count" -i "$RATE_INTERVAL" -W 2 -I "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" \
    > "$LOGS/ping.txt" 2>&1 &
ping_pid=$!
DX_BG_PIDS+=($ping_pid)
sleep 25
out=$(ix_exec "$IX_HUB" swanctl --rekey --child dmvpn 2>&1) || ix_fail "hub: swanctl --rekey --child failed: $out"
ix_log "hub rekeyed the Child SA at its initiative: $(tail -n1 <<<"$out")"
sleep 20
out=$(ix_exec "$IX_HUB" swanctl --rekey --ike dmvpn 2>&1) || ix_fail "hub: swanctl --rekey --ike failed: $out"
ix_log "hub rekeyed the IKE SA at its initiative: $(tail -n1 <<<"$out")"
wait "$ping_pid" || true
stats=$(grep -E 'packets transmitted' "$LOGS/ping.txt" || true)
ix_log "pings: $stats"
sent=$(sed -nE 's/^([0-9]+) packets transmitted.*/\1/p' <<<"$stats")
got=$(sed -nE 's/.* ([0-9]+) received.*/\1/p' <<<"$stats")
[ -n "$sent" ] && [ "$sent" = "$got" ] || ix_fail "pings lost during the rekeys: $stats"
wait "$iperf_pid" || ix_fail "iperf3 failed: $(head -c 400 "$LOGS/iperf3.err") $(head -c 400 "$LOGS/iperf3.json")"
tcp=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
if d.get("error"): sys.exit("iperf3: " + d["error"])
e = d["end"]; r = e["sum_received"]; s = e["sum_sent"]
per = [round(i["sum"]["bits_per_second"] / 1e6, 1) for i in d["intervals"]]
print("%.1f MB in %.0f s (%.1f Mbit/s), %d retransmissions; slowest second %.1f Mbit/s" % (
    r["bytes"] / 1e6, r["seconds"], r["bits_per_second"] / 1e6, s.get("retransmits", 0), min(per)))
' "$LOGS/iperf3.json") || ix_fail "TCP stream: $tcp"
ix_log "TCP during the rekeys: $tcp"

# 2. The rekeys happened, at both ends' initiative.
children=$(grep -c 'child SA installed.*rekey=true' "$LOGS/dut/dmvpnd.log" || true)
ikes=$(grep -c 'IKE SA rekeyed' "$LOGS/dut/dmvpnd.log" || true)
ix_log "dmvpnd: $children Child SA rekeys, $ikes IKE SA rekeys"
((children >= 2 && ikes >= 1)) || ix_fail "expected >= 2 Child SA and >= 1 IKE SA rekeys, got $children and $ikes"
# dmvpnd answered the hub's rekeys: it logs those Child SAs as installed by the responder.
responded=$(grep -c 'sending on the rekeyed Child SA' "$LOGS/dut/dmvpnd.log" || true)
ix_log "dmvpnd switched $responded answered Child SA rekeys over after the hub was ready"
((responded >= 1)) || ix_fail "dmvpnd never answered a Child SA rekey of the hub's (no 'sending on the rekeyed Child SA')"

# 3. Nothing leaked, nothing dropped. Old SAs linger a few seconds after a rekey on both ends.
ix_wait "$IX_HUB" 30 'INSTALLED' swanctl --list-sas || ix_fail "hub: no installed Child SA at the end"
settled=0
for _ in $(seq 30); do
    sas=$(ix_exec "$IX_HUB" swanctl --list-sas 2>&1)
    nike=$(grep -c 'ESTABLISHED, IKEv2' <<<"$sas" || true)
    nchild=$(grep -c 'INSTALLED, TRANSPORT' <<<"$sas" || true)
    if ((nike == 1 && nchild == 1)); then settled=1; break; fi
    sleep 1
done
((settled == 1)) || ix_fail "hub holds $nike IKE SAs and $nchild Child SAs with dmvpnd after the run:"$'\n'"$sas"
drops=$(dx_ctl dut show interface --json)
for reason in replay auth_failed unknown_spi; do
    n=$(python3 -c "import json,sys; print(json.load(sys.stdin)['drops'].get('$reason', 0))" <<<"$drops")
    ((n == 0)) || ix_fail "dmvpnd counted $n $reason drops"
done
ix_log "hub: 1 IKE SA, 1 Child SA at the end; dmvpnd: no replay, integrity or unknown-SPI drops"
# The Child SA in use at the end, with its packet counts (the ones before it are deleted by now).
python3 -c '
import json, sys
d = json.load(sys.stdin); d = d.get("data", d)
for p in d["peers"]:
    for c in p.get("children", []):
        print("    dmvpnd child SA in %s out %s: packets in %s out %s" % (c["spi_in"], c["spi_out"], c["packets_in"], c["packets_out"]))
' <<<"$(dx_ctl dut show sa --json)" >&2 || true
dx_pass
