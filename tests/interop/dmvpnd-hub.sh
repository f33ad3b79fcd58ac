#!/usr/bin/env bash
# dmvpnd as the hub (conf/hub.toml, local-address 198.51.100.9) with the stock strongSwan + FRR spoke VM
# (198.51.100.3, tunnel 10.250.0.5, NHS 10.250.0.1 nbma 198.51.100.9). Passes when
#   1. the spoke's `swanctl --list-sas` shows the IKE SA AES_GCM_16-256/PRF_HMAC_SHA2_512/ECP_256 and a
#      TRANSPORT child SA with the dmvpnd hub,
#   2. `dmvpnctl show dmvpn` lists the spoke (198.51.100.3 / 10.250.0.5) as UP with attribute D (dynamic),
#      and the spoke's nhrpd lists its NHS as resolved,
#   3. ping over the tunnel works both ways.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init dmvpnd-hub

"$RIG" up --no-hub --no-spoke
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
dx_config hub hub local="$IX_DUT_NBMA"
dx_start hub "$IX_DUT_NS"
t=$SECONDS
"$RIG" up --no-hub --spoke-hub-nbma "$IX_DUT_NBMA" || ix_fail "rig up (spoke VM) failed"
ix_log "spoke booted and configured in $((SECONDS - t))s"
t=$SECONDS

# 1. The SA as the spoke sees it.
ix_wait "$IX_SPOKE" 150 'INSTALLED, TRANSPORT, ESP:AES_GCM_16-256' swanctl --list-sas \
    || ix_fail "spoke: no installed TRANSPORT child SA with the dmvpnd hub:"$'\n'"$IX_OUT"
grep -q 'AES_GCM_16-256/PRF_HMAC_SHA2_512/ECP_256' <<<"$IX_OUT" || ix_fail "spoke: wrong IKE proposal:"$'\n'"$IX_OUT"
grep -Eq "remote .*@ $(dx_esc "$IX_DUT_NBMA")\[500\]" <<<"$IX_OUT" || ix_fail "spoke: peer is not $IX_DUT_NBMA:500:"$'\n'"$IX_OUT"
ix_log "spoke's view of the SA after $((SECONDS - t))s:"
grep -E 'ESTABLISHED|AES_GCM|TRANSPORT|\[gre\]' <<<"$IX_OUT" | sed 's/^/    /' >&2

# 2. Registration, as dmvpnd (hub) and the spoke see it.
up_dyn() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
d = d.get("data", d)
ok = [p for p in d["peers"] if p["peer_nbma"] == sys.argv[1] and p["peer_tunnel"] == sys.argv[2]
      and p["state"] == "UP" and "D" in p["attrs"]]
sys.exit(0 if ok else 1)' "$IX_SPOKE_NBMA" "$IX_SPOKE_TUNNEL"
}
end=$((SECONDS + 90))
until dx_ctl hub show dmvpn --json | up_dyn; do
    ((SECONDS < end)) || ix_fail "dmvpnctl show dmvpn: spoke not UP/dynamic:"$'\n'"$(dx_ctl hub show dmvpn)"$'\n'"$(dx_ctl hub show nhrp)"
    sleep 2
done
ix_log "dmvpnctl show dmvpn after $((SECONDS - t))s:"
dx_ctl hub show dmvpn | grep -E "$(dx_esc "$IX_SPOKE_NBMA")|Type:" | sed 's/^/    /' >&2
ix_wait "$IX_SPOKE" 60 "$(dx_esc "$IX_DUT_NBMA") +$(dx_esc "$IX_HUB_TUNNEL")" vtysh -c 'show ip nhrp nhs' \
    || ix_fail "spoke: NHS $IX_HUB_TUNNEL (nbma $IX_DUT_NBMA) not resolved:"$'\n'"$IX_OUT"
sed 's/^/    spoke nhs: /' <<<"$IX_OUT" >&2

# 3. Pings both ways.
out=$(ix_exec "$IX_SPOKE" ping -c 3 -i 0.5 -W 2 -I "$IX_SPOKE_TUNNEL" "$IX_HUB_TUNNEL" 2>&1) \
    || ix_fail "spoke -> dmvpnd hub ping failed:"$'\n'"$out"
ix_log "spoke -> dmvpnd hub: $(grep 'packet loss' <<<"$out")"
dx_ping "$IX_DUT_NS" "$IX_HUB_TUNNEL" "$IX_SPOKE_TUNNEL" || ix_fail "dmvpnd hub -> spoke ping failed:"$'\n'"$DX_OUT"
ix_log "dmvpnd hub -> spoke: $(grep 'packet loss' <<<"$DX_OUT")"

dx_pass
