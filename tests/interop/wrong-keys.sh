#!/usr/bin/env bash
# dmvpnd spoke with wrong secrets against the stock strongSwan + FRR hub VM. Passes when
#   A. wrong PSK: dmvpnd logs "IKE authentication failed", neither side has an established IKE SA or a
#      child SA (hub `swanctl --list-sas`, dmvpnctl show ike), the hub's charon logs the failed PSK check;
#   B. right PSK, wrong NHRP key: the IKE SA and child SA come up, but there is no registration: no
#      10.250.0.9 in the hub's NHRP cache, dmvpnd's NHS is not up and dmvpnd never logs "NHRP registered".
#      What the hub does with the unauthenticated Registration Request is recorded from the capture
#      (decrypted with dmvpnd's keys): if it answers with an NHRP Error Indication, dmvpnd must log it
#      ("NHRP error indication received ... Authentication Failure", or "NHRP authentication failure" if the
#      indication carried the hub's key) and count it; if the hub stays silent, that is reported.
#      Observed with FRR 10.3: one Error Indication, code 11, without extensions, per Registration Request.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init wrong-keys

t=$SECONDS
"$RIG" up --no-hub --no-spoke
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
"$RIG" up --no-spoke || ix_fail "rig up (hub VM) failed"
ix_log "hub booted and configured in $((SECONDS - t))s"
ix_exec "$IX_HUB" vtysh -c 'debug nhrp common' -c 'debug nhrp event' -c 'debug nhrp kernel' >/dev/null || true

# ---- A. wrong PSK
dx_config psk spoke psk=not-the-psk
t=$SECONDS
dx_start psk "$IX_DUT_NS"
dx_wait_log psk 60 'IKE authentication failed' \
    || ix_fail "wrong PSK: dmvpnd did not log 'IKE authentication failed'"
ix_log "wrong PSK, dmvpnd after $((SECONDS - t))s:"
grep -m1 'IKE authentication failed' "$LOGS/psk/dmvpnd.log" | sed 's/^/    /' >&2
sleep 3
sas=$(ix_exec "$IX_HUB" swanctl --list-sas 2>&1)
! grep -Eq 'ESTABLISHED|INSTALLED' <<<"$sas" || ix_fail "wrong PSK: the hub has an SA:"$'\n'"$sas"
ike=$(dx_ctl psk show ike --json)
! grep -q '"state": "established"' <<<"$ike" || ix_fail "wrong PSK: dmvpnd has an established IKE SA:"$'\n'"$ike"
xfrm=$(ix_exec "$IX_HUB" ip xfrm state)
[ -z "$xfrm" ] || ix_fail "wrong PSK: the hub's kernel has ESP SAs:"$'\n'"$xfrm"
charon=$(ix_exec "$IX_HUB" grep -E 'MAC mismatch|authentication of .* failed|AUTHENTICATION_FAILED' /var/log/charon.log || true)
[ -n "$charon" ] || ix_fail "wrong PSK: the hub's charon logged no PSK failure"
ix_log "wrong PSK, hub charon:"; head -n 3 <<<"$charon" | sed 's/^/    /' >&2
ix_log "wrong PSK: no SA on either side"
dx_stop psk

# ---- B. wrong NHRP key
dx_capture "$LOGS/wan-nhrp-key.pcap"
dx_config nhrp spoke nhrp_key=wrongkey
t=$SECONDS
dx_start nhrp "$IX_DUT_NS"
ix_wait "$IX_HUB" 120 'INSTALLED, TRANSPORT, ESP:AES_GCM_16-256' swanctl --list-sas \
    || ix_fail "wrong NHRP key: IKE/child SA did not come up (the PSK is right):"$'\n'"$IX_OUT"
grep -q 'ESTABLISHED, IKEv2' <<<"$IX_OUT" || ix_fail "wrong NHRP key: IKE SA not established:"$'\n'"$IX_OUT"
dx_wait_log nhrp 20 'child SA installed' || ix_fail "wrong NHRP key: dmvpnd did not log 'child SA installed'"
ix_log "wrong NHRP key: IKE + child SA up after $((SECONDS - t))s; watching registration attempts for 40 s"
sleep 40
cache=$(ix_exec "$IX_HUB" vtysh -c 'show ip nhrp cache')
! grep -Eq "$(dx_esc "$IX_DUT_TUNNEL")" <<<"$cache" \
    || ix_fail "wrong NHRP key: the hub registered $IX_DUT_TUNNEL anyway:"$'\n'"$cache"
! grep -q 'NHRP registered with NHS' "$LOGS/nhrp/dmvpnd.log" \
    || ix_fail "wrong NHRP key: dmvpnd logged a registration"
nhrp=$(dx_ctl nhrp show nhrp --json)
! grep -q '"state": "up"' <<<"$nhrp" || ix_fail "wrong NHRP key: dmvpnd's NHS is up:"$'\n'"$nhrp"
ix_log "wrong NHRP key: hub cache has no $IX_DUT_TUNNEL:"; sed 's/^/    /' <<<"$cache" >&2

dx_stop_bg
prefs="$LOGS/nhrp/keys/wireshark/preferences"
printf 'esp.enable_encryption_decode: TRUE\nnhrp.auth_ext_has_addr: FALSE\n' > "$prefs"
ts() { XDG_CONFIG_HOME="$LOGS/nhrp/keys" HOME="$LOGS/nhrp" tshark -n -r "$LOGS/wan-nhrp-key.pcap" "$@" 2>/dev/null; }
req=$(ts -Y "nhrp.hdr.op.type == 3 && ip.src == $IX_DUT_NBMA" | wc -l)
rep=$(ts -Y "nhrp.hdr.op.type == 4 && ip.src == $IX_HUB_NBMA" | wc -l)
err=$(ts -Y "nhrp.hdr.op.type == 7 && ip.src == $IX_HUB_NBMA" | wc -l)
ix_log "wrong NHRP key, capture (decrypted): $req Registration Requests from dmvpnd, $rep Replies, $err Error Indications from the hub"
((req >= 1)) || ix_fail "wrong NHRP key: no Registration Request from dmvpnd in the capture"
((rep == 0)) || ix_fail "wrong NHRP key: the hub answered with $rep Registration Replies"
frr=$(ix_exec "$IX_HUB" grep -iE 'auth|unauthori' /var/log/frr/frr.log || true)
[ -z "$frr" ] || { ix_log "hub nhrpd log:"; tail -n 4 <<<"$frr" | sed 's/^/    /' >&2; }
if ((err > 0)); then
    ts -Y "nhrp.hdr.op.type == 7" -V | grep -E 'Extension Offset|Error Code' | head -n 2 | sed 's/^/    hub error indication: /' >&2 || true
    # FRR's Error Indication carries no extensions (RFC 2332 5.2.7), so there is no key in it to reject: dmvpnd
    # accepts it and must report the hub's verdict; a hub packet with the hub's (other) key would instead be
    # dropped with "NHRP authentication failure: packet dropped".
    line=$(grep -m1 -E 'NHRP error indication received .*Authentication Failure|NHRP authentication failure' \
        "$LOGS/nhrp/dmvpnd.log" || true)
    [ -n "$line" ] || ix_fail "wrong NHRP key: the hub sent $err Error Indications (Authentication Failure) but dmvpnd logged no NHRP authentication failure"
    grep -Eq '"error_indication": [1-9]' <<<"$nhrp" \
        || ix_fail "wrong NHRP key: dmvpnd's rx.error_indication counter is 0:"$'\n'"$nhrp"
    ix_log "wrong NHRP key: the hub answers each Registration Request with an Error Indication (code 11, no extensions); dmvpnd:"
    sed 's/^/    /' <<<"$line" >&2
else
    ix_log "wrong NHRP key: the hub stays silent (no Error Indication); dmvpnd keeps retrying:"
    grep -iE 'nhrp|registration' "$LOGS/nhrp/dmvpnd.log" | tail -n 3 | sed 's/^/    /' >&2
fi

dx_pass
