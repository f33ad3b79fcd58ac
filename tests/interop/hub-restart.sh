#!/usr/bin/env bash
# The stock hub restarted under a dmvpnd spoke with traffic: charon and nhrpd killed with SIGKILL and the
# hub kernel's SAs flushed (what a crash or reboot loses), then both started again with the same
# configuration. A restarted strongSwan hub is silent about SPIs it does not know (no INVALID_IKE_SPI for
# the spoke's probes, no INVALID_SPI for its ESP: docs/interop-notes.md §32), so the spoke learns of the
# restart only from its own liveness check. This scenario's config: [ike.dpd] delay 10, retry 3, so the
# probe goes out 10 s after the hub fell silent, is unanswered 3 s later, and that starts a new IKE SA
# alongside the old one; the DPD verdict would come only at 10 + 5 x 3 = 25 s.
# Passes when
#   1. dmvpnd logs the unanswered liveness check and registers again within 22 s of the kill, without a
#      "peer dead (DPD)" verdict before that,
#   2. the hub has a new IKE SA and the spoke in its NHRP cache, and pings go both ways.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init hub-restart
WITHIN=22

t=$SECONDS
"$RIG" up --no-hub --no-spoke
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
"$RIG" up --no-spoke || ix_fail "rig up (hub VM) failed"
ix_log "hub booted and configured in $((SECONDS - t))s"
dx_config dut spoke dpd_delay=10 dpd_retry=3
dx_start dut "$IX_DUT_NS"

ix_wait "$IX_HUB" 120 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_DUT_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not registered:"$'\n'"$IX_OUT"
dx_wait_log dut 30 'NHRP registered with NHS' || ix_fail "dmvpnd did not log 'NHRP registered with NHS'"
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" || ix_fail "ping before the restart failed:"$'\n'"$DX_OUT"
spi_before=$(ix_exec "$IX_HUB" swanctl --list-sas | sed -nE 's/.*ESTABLISHED, IKEv2, ([0-9a-f]+)_i.*/\1/p' | head -n1)
ix_log "registered; hub IKE SA spi_i $spi_before"

# 1. Traffic toward the hub throughout; kill and restart the hub's daemons.
ip netns exec "$IX_DUT_NS" ping -q -i 0.5 -W 1 -I "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" >/dev/null 2>&1 &
DX_BG_PIDS+=($!)
sleep 2
t=$SECONDS
ix_exec "$IX_HUB" sh -c 'kill -9 $(pidof charon) $(pidof nhrpd); ip xfrm state flush; ip xfrm policy flush' >/dev/null
ix_log "hub: charon and nhrpd killed, kernel SAs flushed"
sleep 3
ix_vm exec "$IX_HUB" --timeout 60 -- sh -c 'rm -f /var/run/frr/nhrpd.vty /var/run/charon.vici; /etc/ix/start-daemons.sh' >/dev/null \
    || ix_fail "hub: restarting charon and nhrpd failed"
ix_log "hub: charon and nhrpd started again $((SECONDS - t))s after the kill"
dx_wait_log dut $((WITHIN + 10)) 'NHRP registered with NHS' 2 \
    || ix_fail "dmvpnd did not register again within $((WITHIN + 10)) s of the kill"
back=$((SECONDS - t))
ix_log "dmvpnd registered again ${back}s after the kill (the DPD verdict would have come at about 25 s):"
grep -E 'liveness check unanswered|peer dead|initiating a new IKE SA|registering again' "$LOGS/dut/dmvpnd.log" \
    | sed 's/^/    /' >&2
((back <= WITHIN)) || ix_fail "back only after ${back}s (wanted at most ${WITHIN}s)"
grep -q 'left a liveness check unanswered' "$LOGS/dut/dmvpnd.log" \
    || ix_fail "dmvpnd did not log the unanswered liveness check"
# The old SA's verdict would have come at about 25 s: past it (and a margin), none came, because the
# new SA replaced the old one first.
while ((SECONDS - t < 32)); do sleep 1; done
! grep -q 'peer dead (DPD)' "$LOGS/dut/dmvpnd.log" || ix_fail "dmvpnd waited for the DPD verdict"
dx_stop_bg

# 2. The hub has a new IKE SA and the spoke registered; pings both ways.
ix_wait "$IX_HUB" 60 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_DUT_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not in the cache after the restart:"$'\n'"$IX_OUT"
sas=$(ix_exec "$IX_HUB" swanctl --list-sas)
spis=$(sed -nE 's/.*ESTABLISHED, IKEv2, ([0-9a-f]+)_i.*/\1/p' <<<"$sas")
[[ -n $spis ]] && grep -qv "^$spi_before\$" <<<"$spis" || ix_fail "hub: no new IKE SA after the restart:"$'\n'"$sas"
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" || ix_fail "dmvpnd -> hub ping after the restart failed:"$'\n'"$DX_OUT"
out=$(ix_exec "$IX_HUB" ping -c 3 -i 0.5 -W 2 -I "$IX_HUB_TUNNEL" "$IX_DUT_TUNNEL" 2>&1) \
    || ix_fail "hub -> dmvpnd ping after the restart failed:"$'\n'"$out"
ix_log "after the restart: pings both ways OK"

dx_pass
