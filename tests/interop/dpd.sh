#!/usr/bin/env bash
# Dead peer detection: dmvpnd spoke registered with the stock hub VM; the hub VM is frozen (vm.sh pause,
# SIGSTOP of its qemu) while a ping toward 10.250.0.1 runs (on-demand DPD only probes when dmvpnd sends
# traffic). This scenario's config: [ike.dpd] delay 10, retry 3 (max 5 probes, fixed interval):
# budget = 10 s idle + 5 x 3 s of probes = 25 s after the last packet from the hub; the test allows 60 s.
# Passes when
#   1. dmvpnd logs "peer dead (DPD)" within the budget (+ slack) and `dmvpnctl show dmvpn` no longer lists the
#      hub as UP (the IKE SA is gone from `show ike`),
#   2. after vm.sh resume, dmvpnd re-registers: a new IKE SA on the hub (new SPI), a second
#      "NHRP registered with NHS", 10.250.0.9 in the hub's NHRP cache, ping works both ways.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init dpd
BUDGET=25 SLACK=35
# IX_DPD_OUTAGE=N keeps the hub frozen N more seconds after dmvpnd declared it dead (traffic keeps flowing), e.g.
# 150 to outlast dmvpnd's first IKE attempt (~95 s of retransmissions): a hub reboot of a few minutes.
OUTAGE=${IX_DPD_OUTAGE:-0}
# IX_DPD_IDLE=1 stops the ping once the hub is declared dead: nothing but dmvpnd's own NHRP retries can bring
# the SA back (an idle spoke). Re-registration must still follow the resume within 150 s.
IDLE=${IX_DPD_IDLE:-0}

t=$SECONDS
"$RIG" up --no-hub --no-spoke
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
"$RIG" up --no-spoke || ix_fail "rig up (hub VM) failed"
ix_log "hub booted and configured in $((SECONDS - t))s"
dx_config dut spoke dpd_delay=10 dpd_retry=3
grep -A4 '^\[ike.dpd\]' "$LOGS/dut/dmvpnd.toml" | sed 's/^/    /' >&2
dx_start dut "$IX_DUT_NS"

ix_wait "$IX_HUB" 120 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_DUT_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not registered:"$'\n'"$IX_OUT"
dx_wait_log dut 30 'NHRP registered with NHS' || ix_fail "dmvpnd did not log 'NHRP registered with NHS'"
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" || ix_fail "ping before the pause failed:"$'\n'"$DX_OUT"
spi_before=$(ix_exec "$IX_HUB" swanctl --list-sas | sed -nE 's/.*ESTABLISHED, IKEv2, ([0-9a-f]+)_i.*/\1/p' | head -n1)
ix_log "registered; hub IKE SA spi_i $spi_before"

# 1. Freeze the hub while traffic toward it continues.
ix_vm pause "$IX_HUB"
t=$SECONDS
ip netns exec "$IX_DUT_NS" ping -q -i 1 -W 1 -I "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" >/dev/null 2>&1 &
DX_BG_PIDS+=($!)
dx_wait_log dut $((BUDGET + SLACK)) 'peer dead \(DPD\)' \
    || { ix_vm resume "$IX_HUB"; ix_fail "dmvpnd did not declare the hub dead within $((BUDGET + SLACK)) s"; }
dead_after=$((SECONDS - t))
ix_log "dmvpnd declared the hub dead ${dead_after}s after the pause (budget ${BUDGET}s):"
grep -m1 'peer dead (DPD)' "$LOGS/dut/dmvpnd.log" | sed 's/^/    /' >&2
sleep 1
dmvpn=$(dx_ctl dut show dmvpn)
! grep -Eq "$(dx_esc "$IX_HUB_NBMA") .* UP " <<<"$dmvpn" || { ix_vm resume "$IX_HUB"; ix_fail "dmvpnctl still shows the hub UP:"$'\n'"$dmvpn"; }
ix_log "dmvpnctl show dmvpn while the hub is frozen:"; grep -E "$(dx_esc "$IX_HUB_NBMA")" <<<"$dmvpn" | sed 's/^/    /' >&2
ike=$(dx_ctl dut show ike --json)
! grep -q '"state": "established"' <<<"$ike" || { ix_vm resume "$IX_HUB"; ix_fail "dmvpnd still has an established IKE SA:"$'\n'"$ike"; }

((IDLE == 0)) || { dx_stop_bg; ix_log "ping stopped: dmvpnd is idle from now on"; }
if ((OUTAGE > 0)); then
    ix_log "keeping the hub frozen for $OUTAGE s more"
    sleep "$OUTAGE"
    grep -E 'initiating IKE|could not be established' "$LOGS/dut/dmvpnd.log" | tail -n 4 | sed 's/^/    /' >&2
fi

# 2. Thaw the hub: dmvpnd re-registers.
ix_vm resume "$IX_HUB"
t=$SECONDS
ix_log "hub resumed"
dx_wait_log dut 150 'NHRP registered with NHS' 2 || ix_fail "dmvpnd did not re-register after the resume"
ix_log "dmvpnd re-registered $((SECONDS - t))s after the resume"
dx_stop_bg
ix_wait "$IX_HUB" 60 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_DUT_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not in the cache after the resume:"$'\n'"$IX_OUT"
sas=$(ix_exec "$IX_HUB" swanctl --list-sas)
grep -E 'ESTABLISHED, IKEv2' <<<"$sas" | sed 's/^/    hub: /' >&2
spis=$(sed -nE 's/.*ESTABLISHED, IKEv2, ([0-9a-f]+)_i.*/\1/p' <<<"$sas")
grep -qv "^$spi_before\$" <<<"$spis" || ix_fail "hub: no new IKE SA after the resume:"$'\n'"$sas"
dx_wait_ctl dut 30 "$(dx_esc "$IX_HUB_NBMA") +$(dx_esc "$IX_HUB_TUNNEL") +UP " show dmvpn \
    || ix_fail "dmvpnctl show dmvpn: hub not UP again:"$'\n'"$DX_OUT"
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" || ix_fail "dmvpnd -> hub ping after the resume failed:"$'\n'"$DX_OUT"
out=$(ix_exec "$IX_HUB" ping -c 3 -i 0.5 -W 2 -I "$IX_HUB_TUNNEL" "$IX_DUT_TUNNEL" 2>&1) \
    || ix_fail "hub -> dmvpnd ping after the resume failed:"$'\n'"$out"
ix_log "after the resume: pings both ways OK ($(grep 'packet loss' <<<"$DX_OUT"))"

dx_pass
