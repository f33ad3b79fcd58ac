#!/usr/bin/env bash
# The Debian package under a real systemd: one Debian 13 VM booted with systemd as PID 1 (image:
# systemd/build-image.sh), the .deb from packaging/build-deb.sh installed with `apt install ./dmvpnd_*.deb`,
# and a stock strongSwan + FRR hub (the rig's hub templates, conf/hub/, started by ixvm.py configure) in a
# network namespace of the same VM -- one VM instead of two (machine budget: one qemu at a time), the hub
# reached over a veth pair: VM root netns wan0 198.51.100.9 (dmvpnd, as the unit runs it) <-> netns ixhub
# eth0 198.51.100.1 (charon + nhrpd, kernel GRE + ESP). Checks, each with its time:
#   1. apt install: binaries, unit, sysusers user/group, secrets.toml 0600 dmvpnd:dmvpnd, not enabled
#   2. systemctl start returns once READY=1 (Type=notify): active (running)
#   3. the main process runs as dmvpnd:dmvpnd with exactly CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE
#      (effective, permitted, ambient, bounding)
#   4. the spoke registers with the hub (hub NHRP cache dynamic 10.250.0.9) and pings over the tunnel
#   5. systemctl reload applies a changed [[route]] while the hub's IKE and child SA stay the same (SPIs)
#   6. dmvpnctl show sa works for a member of the control group, is refused for a non-member
#   7. journalctl -u dmvpnd holds the daemon's log lines
#   8. systemctl stop: the hub's IKE SA with the spoke is deleted, no TUN device left
#   9. SIGSTOP of the main process: the watchdog (WatchdogSec=30) restarts it within 30 + 15 s and the spoke
#      registers again
#  10. systemd-analyze security dmvpnd: exposure score printed
#  11. apt remove (binaries and unit gone, conffiles kept), apt purge (nothing of dmvpnd left but the user)
# Any failure: FAIL line, journal, systemctl status, hub state and console under $IX_CACHE/logs/systemd-unit-*.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
IX_TEST=systemd-unit
REPO=$(cd "$IX_DIR/../.." && pwd)
VM=${IX_SD_VM:-ix-sd}
NS=${IX_SD_NS:-dmvpn-ix-sd}      # host netns holding the VM's tap (no traffic leaves the VM)
BR=br-sd
HUB_NS=ixhub                     # netns inside the VM
HUB=198.51.100.1 DUT=198.51.100.9 HUB_T=10.250.0.1 DUT_T=10.250.0.9
WATCHDOG=30                      # conf/dmvpnd.service: WatchdogSec
CAPS=0000000000003400            # bits 10 (NET_BIND_SERVICE), 12 (NET_ADMIN), 13 (NET_RAW)
LOGS=${IX_LOGS:-$IX_CACHE/logs/$IX_TEST-$(date +%Y%m%d-%H%M%S)}
status=1 T0=$SECONDS

[ "$(id -u)" = 0 ] || ix_fail "needs root"
ls -dt "$IX_CACHE"/logs/$IX_TEST-* 2>/dev/null | tail -n +10 | xargs -r rm -rf || true
mkdir -p "$LOGS"
ix_lock

vx() { ix_exec "$VM" "$@"; }              # run in the VM
vsh() { ix_exec "$VM" sh -c "$1"; }       # shell snippet in the VM
hub() { ix_exec "$VM" ip netns exec "$HUB_NS" "$@"; }
step() { STEP=$1; TS=$SECONDS; ix_log "-- $STEP"; }
ok() { ix_log "ok: $STEP ($((SECONDS - TS)) s)${1:+: $1}"; }
# vwait TIMEOUT REGEX SNIPPET: re-run a shell snippet in the VM until its output matches (bounded)
vwait() { ix_wait "$VM" "$1" "$2" sh -c "$3"; }

cleanup() {
    local rc=$?
    set +e
    if ((status != 0)) && [ -f "$IX_CACHE/vms/$VM/qemu.pid" ]; then
        vsh 'systemctl status --no-pager -l dmvpnd; journalctl -b --no-pager -u dmvpnd' > "$LOGS/dmvpnd-journal.txt" 2>&1
        vsh 'journalctl -b --no-pager -n 300' > "$LOGS/journal.txt" 2>&1
        hub sh -c 'swanctl --list-sas; vtysh -c "show ip nhrp cache"; ip xfrm state; ip addr' > "$LOGS/hub-state.txt" 2>&1
        vx cat /var/log/charon.log > "$LOGS/hub-charon.log" 2>&1
        ix_log "---- dmvpnd journal (last 40 lines):"
        tail -n 40 "$LOGS/dmvpnd-journal.txt" | sed 's/^/    /' >&2
        cp "$IX_CACHE/vms/$VM/console.log" "$LOGS/console.log" 2>/dev/null
        ix_log "all logs: $LOGS"
    fi
    ix_vm down "$VM" >/dev/null 2>&1
    ip netns del "$NS" 2>/dev/null
    ((status == 0)) && ix_log "PASS in $((SECONDS - T0))s" || ix_log "FAILED after $((SECONDS - T0))s"
    exit $((status != 0 ? 1 : rc))
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------- package, VM
step "package (packaging/build-deb.sh)"
"$REPO/packaging/build-deb.sh" > "$LOGS/build-deb.log" 2>&1 || { tail -n 30 "$LOGS/build-deb.log" >&2; ix_fail "build-deb.sh failed"; }
DEB=$(ls -t "${CARGO_TARGET_DIR:-$REPO/target}"/debian/dmvpnd_*.deb | head -n1)
grep -E '^[EW]: ' "$LOGS/build-deb.log" | sed 's/^/    lintian /' >&2 || true
ok "$(basename "$DEB")"

step "boot the systemd VM"
"$IX_DIR/systemd/build-image.sh" > "$LOGS/image.txt" 2>&1 || { tail -n 20 "$LOGS/image.txt" >&2; ix_fail "systemd image build failed"; }
ip netns del "$NS" 2>/dev/null || true
ix_vm down "$VM" >/dev/null 2>&1 || true
ip netns add "$NS"
ip -n "$NS" link add "$BR" type bridge
ip -n "$NS" link set "$BR" up
ix_vm up "$VM" --netns "$NS" --bridge "$BR" --image-script "$IX_DIR/systemd/build-image.sh" \
    --init /usr/lib/systemd/systemd
[ "$(vx ps -o comm= -p 1)" = systemd ] || ix_fail "PID 1 is not systemd: $(vx ps -o comm= -p 1)"
vwait 120 '^(running|degraded)' 'systemctl is-system-running' || ix_fail "boot did not finish: $IX_OUT"
ok "PID 1 systemd $(vx sh -c 'systemctl --version | head -n1'), state $IX_OUT"

# ---------------------------------------------------------------------------------------------- 1. install
step "apt install ./$(basename "$DEB")"
ix_vm put "$VM" "$DEB" "/root/$(basename "$DEB")" >/dev/null
# Offline: every dependency (libc6, systemd) is in the image, so apt needs no package lists or downloads.
out=$(vsh "cd /root && DEBIAN_FRONTEND=noninteractive apt install -y ./$(basename "$DEB") 2>&1") \
    || ix_fail "apt install failed:"$'\n'"$out"
echo "$out" > "$LOGS/apt-install.txt"
out=$(vsh 'set -e; test -x /usr/sbin/dmvpnd; test -x /usr/bin/dmvpnctl; test -f /usr/lib/systemd/system/dmvpnd.service
           getent passwd dmvpnd; getent group dmvpnd; stat -c "%a %U:%G %n" /etc/dmvpnd/secrets.toml /etc/dmvpnd/dmvpnd.toml
           systemctl is-enabled dmvpnd || true; dpkg-query -W -f "\${Status} \${Version}\n" dmvpnd' 2>&1) \
    || ix_fail "installed files missing:"$'\n'"$out"
grep -q '^dmvpnd:x:[0-9]*:[0-9]*:.*:/nonexistent:/usr/sbin/nologin$' <<<"$out" || ix_fail "no system user dmvpnd:"$'\n'"$out"
grep -q '^600 dmvpnd:dmvpnd /etc/dmvpnd/secrets.toml$' <<<"$out" || ix_fail "secrets.toml not 0600 dmvpnd:dmvpnd:"$'\n'"$out"
grep -q '^644 root:root /etc/dmvpnd/dmvpnd.toml$' <<<"$out" || ix_fail "dmvpnd.toml not 0644 root:root:"$'\n'"$out"
grep -qx 'disabled' <<<"$out" || ix_fail "unit should be installed disabled:"$'\n'"$out"
ok "$(tail -n1 <<<"$out"); user $(grep -m1 '^dmvpnd:x' <<<"$out"); secrets 0600 dmvpnd:dmvpnd; unit disabled"

# ---------------------------------------------------------------------------------------------- hub, config
step "strongSwan + FRR hub in netns $HUB_NS (rig templates conf/hub/)"
vsh "ip netns add $HUB_NS; ip link add wan0 type veth peer name eth0 netns $HUB_NS
     ip addr add $DUT/24 dev wan0; ip link set wan0 up
     ip -n $HUB_NS link set lo up; ip -n $HUB_NS addr add $HUB/24 dev eth0; ip -n $HUB_NS link set eth0 up
     ip netns exec $HUB_NS sysctl -q -w net.ipv4.ip_forward=1" || ix_fail "hub netns setup failed"
ix_vm configure "$VM" --guest-netns "$HUB_NS" --ip "$HUB/24" --role hub --tunnel-ip "$HUB_T" 2> "$LOGS/hub-configure.txt" \
    || { cat "$LOGS/hub-configure.txt" >&2; ix_fail "hub configuration failed"; }
ok

# The installed conffile, with only what the reference deployment leaves to the operator changed: tunnel
# address, the hub's NBMA, the underlay interface, the rig's keys, the control group, and one static
# route (the example leaves routing to OSPF; step 5 changes this route).
out=$(vsh "set -e; cd /etc/dmvpnd
     sed -i -e 's|^address = \"10\.250\.0\.9/24\"|address = \"$DUT_T/24\"|' -e 's|^nbma = \"198\.51\.100\.1\"|nbma = \"$HUB\"|' \
            -e '/^\[underlay\]/,/^\[/ s|^interface = \"eth0\"|interface = \"wan0\"|' dmvpnd.toml
     printf '\n[control]\ngroup = \"dmvpnd\"\n\n[[route]]\nprefix = \"10.1.1.0/24\"\nvia = \"$HUB_T\"\n' >> dmvpnd.toml
     printf '[psk]\nANY = \"%s\"\n\n[nhrp]\nauthentication = \"%s\"\n' '${IX_PSK:-dmvpn-interop-psk}' '${IX_NHRP_KEY:-keykey00}' > secrets.toml
     stat -c '%a %U:%G' secrets.toml | grep -qx '600 dmvpnd:dmvpnd'
     runuser -u dmvpnd -- dmvpnd --check-config /etc/dmvpnd/dmvpnd.toml
     dmvpnd --check-config /etc/dmvpnd/dmvpnd.toml" 2>&1) \
    || ix_fail "configuration rejected (as user dmvpnd, then as root: the secrets belong to the service user):"$'\n'"$out"
sed 's/^/    /' <<<"$out" >&2

# ---------------------------------------------------------------------------------------------- 2. start
step "systemctl start dmvpnd (Type=notify)"
out=$(vx systemctl start dmvpnd 2>&1) || ix_fail "systemctl start failed:"$'\n'"$out"
show=$(vx systemctl show -p Type,ActiveState,SubState,MainPID,NRestarts,StatusErrno dmvpnd)
grep -qx 'Type=notify' <<<"$show" && grep -qx 'ActiveState=active' <<<"$show" && grep -qx 'SubState=running' <<<"$show" \
    || ix_fail "not active (running) via notify:"$'\n'"$show"
PID=$(sed -n 's/^MainPID=//p' <<<"$show")
ok "$(vx systemctl status --no-pager dmvpnd | grep -E 'Active:')"

# ---------------------------------------------------------------------------------------------- 3. identity
step "user and capabilities of pid $PID"
st=$(vx cat "/proc/$PID/status")
uid=$(vx id -u dmvpnd) gid=$(vx id -g dmvpnd)
grep -Eq "^Uid:\s+$uid\s+$uid\s+$uid\s+$uid$" <<<"$st" || ix_fail "not running as dmvpnd ($uid):"$'\n'"$(grep Uid <<<"$st")"
grep -Eq "^Gid:\s+$gid\s+$gid\s+$gid\s+$gid$" <<<"$st" || ix_fail "not group dmvpnd ($gid):"$'\n'"$(grep Gid <<<"$st")"
for c in CapEff CapPrm CapAmb CapBnd; do
    grep -Eq "^$c:\s+$CAPS$" <<<"$st" || ix_fail "$c is not $CAPS (net_admin, net_raw, net_bind_service):"$'\n'"$(grep ^Cap <<<"$st")"
done
grep -Eq '^NoNewPrivs:\s+1$' <<<"$st" || ix_fail "NoNewPrivs not set"
ok "uid $uid ($(vx ps -o user= -p "$PID")), $(grep -E '^Cap(Eff|Bnd)' <<<"$st" | tr -s '\t\n' ' ')= cap_net_bind_service,cap_net_admin,cap_net_raw"

# ---------------------------------------------------------------------------------------------- 4. register
step "registration with the strongSwan + FRR hub, ping over the tunnel"
vwait 120 "dynamic +${DUT_T//./\\.} +${DUT//./\\.}" "ip netns exec $HUB_NS vtysh -c 'show ip nhrp cache'" \
    || ix_fail "hub: $DUT_T not registered:"$'\n'"$IX_OUT"
sas=$(hub swanctl --list-sas)
grep -q 'INSTALLED, TRANSPORT, ESP:AES_GCM_16-256' <<<"$sas" || ix_fail "hub: no transport child SA:"$'\n'"$sas"
out=$(vx ping -c 3 -i 0.5 -W 2 -I "$DUT_T" "$HUB_T" 2>&1) || ix_fail "ping spoke -> hub failed:"$'\n'"$out"
out=$(hub ping -c 3 -i 0.5 -W 2 "$DUT_T" 2>&1) || ix_fail "ping hub -> spoke failed:"$'\n'"$out"
ok "hub cache: $(grep -E "dynamic" <<<"$IX_OUT" | tr -s ' ')"

# ---------------------------------------------------------------------------------------------- 5. reload
step "systemctl reload with a changed static route"
# the hub's IKE SPIs and child SPIs (in/out), e.g. "c3e0..._i c149..._r cc82b530 67183a33"
spis() { hub swanctl --list-sas | grep -Eo '[0-9a-f]{16}_[ir]|(in|out) +[0-9a-f]{8}' | awk '{print $NF}' | tr -d '*' | tr '\n' ' '; }
before=$(spis)
[ -n "$before" ] || ix_fail "no SPIs in the hub's SA list"
vx ip route show 10.1.1.0/24 | grep -q "via $HUB_T" || ix_fail "route 10.1.1.0/24 from the config not installed"
vx sed -i 's|^prefix = "10\.1\.1\.0/24"|prefix = "10.1.2.0/24"|' /etc/dmvpnd/dmvpnd.toml
out=$(vx systemctl reload dmvpnd 2>&1) || ix_fail "systemctl reload failed:"$'\n'"$out"
vwait 20 "10\.1\.2\.0/24 via ${HUB_T//./\\.}" 'ip -4 route show | grep "^10\\.1\\."; ip route show 10.1.1.0/24 | grep -q . && echo OLD-STILL-THERE' \
    || ix_fail "changed route not applied"
! grep -q OLD-STILL-THERE <<<"$IX_OUT" || ix_fail "old route 10.1.1.0/24 still installed"
after=$(spis)
[ "$before" = "$after" ] || ix_fail "SAs changed across reload: $before -> $after"
[ "$(vx systemctl show -p MainPID --value dmvpnd)" = "$PID" ] || ix_fail "reload restarted the process"
out=$(vx ping -c 2 -i 0.5 -W 2 -I "$DUT_T" "$HUB_T" 2>&1) || ix_fail "ping after reload failed:"$'\n'"$out"
ok "route $(vx ip route show 10.1.2.0/24 | tr -s ' '), SAs kept ($after), same pid"

# ---------------------------------------------------------------------------------------------- 6. access
step "dmvpnctl for a control-group member and a non-member"
vsh 'id alice >/dev/null 2>&1 || useradd -m -G dmvpnd alice; id bob >/dev/null 2>&1 || useradd -m bob' || ix_fail "useradd failed"
out=$(vsh 'runuser -u alice -- dmvpnctl show sa' 2>&1) || ix_fail "alice (group dmvpnd) refused:"$'\n'"$out"
grep -q "$HUB" <<<"$out" || ix_fail "alice's show sa lacks the hub's SA:"$'\n'"$out"
if out=$(vsh 'runuser -u bob -- dmvpnctl show sa' 2>&1); then ix_fail "bob (not in the group) was served:"$'\n'"$out"; fi
grep -qi 'permission denied' <<<"$out" || ix_fail "bob's refusal does not say why:"$'\n'"$out"
ok "alice (group dmvpnd) served, bob refused: $out"

# ---------------------------------------------------------------------------------------------- 7. journal
step "journalctl -u dmvpnd"
j=$(vx journalctl -b --no-pager -u dmvpnd -o cat)
for re in 'running' 'IKE SA up' 'NHRP registered with NHS'; do
    grep -q "$re" <<<"$j" || ix_fail "journal has no '$re':"$'\n'"$(tail -n 20 <<<"$j")"
done
ok "$(grep -c . <<<"$j") lines, e.g. '$(grep -m1 'NHRP registered with NHS' <<<"$j")'"

# ---------------------------------------------------------------------------------------------- 8. stop
step "systemctl stop: IKE DELETE to the hub, no TUN left"
out=$(vx systemctl stop dmvpnd 2>&1) || ix_fail "systemctl stop failed:"$'\n'"$out"
vwait 20 '^NO-SA$' "ip netns exec $HUB_NS swanctl --list-sas | grep -q '${DUT//./\\.}' || echo NO-SA" \
    || ix_fail "hub still has an SA with $DUT after stop:"$'\n'"$(hub swanctl --list-sas)"
if vx ip link show dmvpn0 >/dev/null 2>&1; then ix_fail "TUN device dmvpn0 left after stop"; fi
vx grep -q "received DELETE for IKE_SA" /var/log/charon.log || ix_fail "the hub's charon never received an IKE DELETE"
vx journalctl -b --no-pager -u dmvpnd -o cat | grep -Eq 'SIGTERM' || ix_fail "journal has no SIGTERM shutdown line"
ok "$(vx systemctl is-active dmvpnd || true); hub: IKE DELETE received, no SA with $DUT; no dmvpn0"

# ---------------------------------------------------------------------------------------------- 9. watchdog
step "watchdog: SIGSTOP the main process"
vx systemctl start dmvpnd || ix_fail "restart for the watchdog test failed"
vwait 90 "dynamic +${DUT_T//./\\.}" "ip netns exec $HUB_NS vtysh -c 'show ip nhrp cache'" || ix_fail "not registered again"
PID=$(vx systemctl show -p MainPID --value dmvpnd)
n0=$(vx systemctl show -p NRestarts --value dmvpnd)
regs0=$(vx journalctl -b --no-pager -u dmvpnd -o cat | grep -c 'NHRP registered with NHS' || true)
vx kill -STOP "$PID"
t=$SECONDS
# systemd sends SIGABRT + SIGCONT at WatchdogSec, then RestartSec=2 and the start itself (a few s under TCG);
# a process that survived the SIGABRT would only go at TimeoutAbortSec (15 s) later, past this limit.
limit=$((WATCHDOG + 15))
# one line "NRESTARTS MAINPID STATE" (grep -E would read a pattern with a newline as two patterns)
vwait "$limit" "^$((n0 + 1)) [1-9][0-9]* active$" \
    'echo $(systemctl show -p NRestarts --value dmvpnd) $(systemctl show -p MainPID --value dmvpnd) $(systemctl is-active dmvpnd)' \
    || ix_fail "no watchdog restart within $limit s:"$'\n'"$IX_OUT"$'\n'"$(vx systemctl status --no-pager dmvpnd)"
restart=$((SECONDS - t))
newpid=$(vx systemctl show -p MainPID --value dmvpnd)
[ "$newpid" != "$PID" ] || ix_fail "same pid after the watchdog restart"
vx journalctl -b --no-pager -u dmvpnd | grep -Eqi 'watchdog timeout' || ix_fail "journal has no watchdog timeout"
vwait 60 "^regs=$((regs0 + 1))" "echo regs=\$(journalctl -b --no-pager -u dmvpnd -o cat | grep -c 'NHRP registered with NHS')" \
    || ix_fail "no new registration after the restart ($IX_OUT)"
out=$(vx ping -c 3 -i 0.5 -W 2 -I "$DUT_T" "$HUB_T" 2>&1) || ix_fail "ping after the watchdog restart failed:"$'\n'"$out"
ok "restarted $restart s after SIGSTOP (WatchdogSec=$WATCHDOG), pid $PID -> $newpid, registered again, ping ok"

# ---------------------------------------------------------------------------------------------- 10. security
step "systemd-analyze security dmvpnd"
sec=$(vx systemd-analyze security --no-pager dmvpnd 2>&1) || true
echo "$sec" > "$LOGS/systemd-analyze-security.txt"
score=$(grep -E 'Overall exposure level' <<<"$sec") || ix_fail "no exposure score:"$'\n'"$sec"
ok "$score"

# ---------------------------------------------------------------------------------------------- 11. remove, purge
step "apt remove, apt purge"
out=$(vx env DEBIAN_FRONTEND=noninteractive apt-get remove -y dmvpnd 2>&1) || ix_fail "apt remove failed:"$'\n'"$out"
out=$(vsh 'pgrep -x dmvpnd && echo PROCESS; ip link show dmvpn0 >/dev/null 2>&1 && echo TUN
           for f in /usr/sbin/dmvpnd /usr/bin/dmvpnctl /usr/lib/systemd/system/dmvpnd.service; do [ -e $f ] && echo LEFT $f; done
           test -f /etc/dmvpnd/dmvpnd.toml || echo NO-CONFFILE; test -f /etc/dmvpnd/secrets.toml || echo NO-SECRETS
           systemctl is-active dmvpnd; dpkg-query -W -f "\${Status}\n" dmvpnd' 2>&1)
grep -Eq 'PROCESS|TUN|LEFT|NO-CONFFILE|NO-SECRETS' <<<"$out" && ix_fail "after apt remove:"$'\n'"$out"
grep -q 'deinstall ok config-files' <<<"$out" || ix_fail "package state after remove:"$'\n'"$out"
out=$(vx env DEBIAN_FRONTEND=noninteractive apt-get purge -y dmvpnd 2>&1) || ix_fail "apt purge failed:"$'\n'"$out"
out=$(vsh 'dpkg-query -W dmvpnd 2>/dev/null && echo STILL-KNOWN; [ -e /etc/dmvpnd ] && ls -la /etc/dmvpnd && echo ETC
           [ -e /run/dmvpnd ] && echo RUN; ip link show dmvpn0 >/dev/null 2>&1 && echo TUN
           systemctl list-unit-files "dmvpnd*" --no-legend | grep . && echo UNIT
           ls /etc/systemd/system/*/dmvpnd.service /var/lib/systemd/deb-systemd-helper-*/*dmvpnd* 2>/dev/null | grep . && echo LINKS
           find /etc /usr /var /opt /srv /run /tmp -name "*dmvpn*" 2>/dev/null \
               | grep -Ev "^(/etc/swanctl/conf\.d/dmvpn\.conf|/run/udev/.*dmvpn\.agent)$" | grep . && echo FILES
           getent passwd dmvpnd >/dev/null && echo "user dmvpnd kept"; true' 2>&1)
grep -Eq 'STILL-KNOWN|ETC|RUN|TUN|UNIT|LINKS|FILES' <<<"$out" && ix_fail "after apt purge:"$'\n'"$out"
ok "nothing left ($(tr '\n' ' ' <<<"$out"))"

status=0
echo "$IX_TEST: 1 passed, 0 failed"
