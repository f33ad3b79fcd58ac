#!/usr/bin/env bash
# Tunnel benchmark: dmvpnd against a plain veth, userspace WireGuard (boringtun) and strongSwan's
# userspace ESP (kernel-libipsec), all between two network namespaces on this machine.
#
#   sudo benches/tunnel/run.sh [--rounds N] [--seconds S] [--only NAME,NAME] [--udp-rate R]
#                              [--udp-goal-rate R] [--udp-window BYTES]
#                              [--pings N] [--json FILE] [--keep] [--set KEY=VALUE]...
#                              [--baseline DIR]
#
# Tunnels (NAME): veth, dmvpnd-esp, dmvpnd-natt, boringtun, libipsec. Rounds are interleaved
# (round 1 runs every tunnel, then round 2, ...); each tunnel is set up afresh in new namespaces
# for each round and torn down after it. Per tunnel and round: ping at idle (N pings, 10 ms
# apart), iperf3 TCP 1 stream (spoke -> hub, and -R), TCP 4 streams, UDP 1360-byte datagrams at a
# fixed offered rate (--udp-rate, 2G: above what the tunnels carry) and at the dataplane goal's
# rate (--udp-goal-rate, 1632M: 150 kpps of 1360 B), both with 4 MB iperf3 socket buffers
# (--udp-window; with the default 208 KB iperf3's own receive socket loses 6-9 % at 150 kpps on a
# bare veth, which hid the tunnels' loss), and the tunnel daemons' CPU time (utime+stime of both ends) during the
# TCP 1-stream test per Gbit delivered. Prints medians with min-max over the rounds and writes
# them as JSON (default benches/tunnel/last-run.json).
#
# --baseline DIR adds the tunnels base-esp and base-natt: the same two dmvpnd cases run with
# DIR/dmvpnd and DIR/dmvpnctl (e.g. a release build of an earlier commit), interleaved with the
# others, so a change is measured side by side against what it replaces.
#
# --set section.key=VALUE (a TOML value, e.g. --set dataplane.workers=1) changes a key in both
# dmvpnd configurations, to compare settings. --keep keeps the scratch directory (logs, configs).
#
# Installs what it needs (Debian packages, boringtun-cli via cargo) and builds dmvpnd/dmvpnctl
# with cargo from this repository. Sends traffic only to addresses inside its own namespaces
# (named dtb-<pid>-...), stops every process it started by PID and deletes its namespaces on
# exit, also after failures and on Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

ALL_TUNNELS=(veth dmvpnd-esp dmvpnd-natt boringtun libipsec)
ROUNDS=3
SECS=5
ONLY=""
UDP_RATE=2G
# 150 kpps of 1360-byte datagrams (the issue's goal: >= 150 kpps with < 1 % loss).
UDP_GOAL_RATE=1632M
UDP_WINDOW=4M
PINGS=200
JSON_OUT="$HERE/last-run.json"
KEEP_WORK=0
DMVPND_SET=()
BASELINE=""

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit "${1:-0}"; }
while (($#)); do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --seconds) SECS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --udp-rate) UDP_RATE=$2; shift 2 ;;
        --udp-goal-rate) UDP_GOAL_RATE=$2; shift 2 ;;
        --udp-window) UDP_WINDOW=$2; shift 2 ;;
        --pings) PINGS=$2; shift 2 ;;
        --json) JSON_OUT=$2; shift 2 ;;
        --keep) KEEP_WORK=1; shift ;;
        --set) DMVPND_SET+=("$2"); shift 2 ;;
        --baseline) BASELINE=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || die "--rounds: 1..99"
[[ $SECS =~ ^[1-9][0-9]?$ ]] || die "--seconds: 1..99"
[[ $PINGS =~ ^[1-9][0-9]{0,3}$ ]] || die "--pings: 1..9999"
[[ $EUID -eq 0 ]] || die "run as root (namespaces, TUN devices): sudo $0"

if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE/dmvpnd && -x $BASELINE/dmvpnctl ]] || die "--baseline: no dmvpnd and dmvpnctl in $BASELINE"
    BASELINE=$(cd "$BASELINE" && pwd)
    ALL_TUNNELS+=(base-esp base-natt)
fi
TUNNELS=()
if [[ -n $ONLY ]]; then
    IFS=, read -r -a want <<<"$ONLY"
    for w in "${want[@]}"; do
        [[ " ${ALL_TUNNELS[*]} " == *" $w "* ]] || die "--only: unknown tunnel '$w' (${ALL_TUNNELS[*]})"
        TUNNELS+=("$w")
    done
else
    TUNNELS=("${ALL_TUNNELS[@]}")
fi
wants() { [[ " ${TUNNELS[*]} " == *" $1 "* ]]; }

WORK=$(mktemp -d "/tmp/dtb-$$.XXXXXX")
RES="$WORK/results"
mkdir -p "$RES"
PIDFILE="$WORK/pids"
: >"$PIDFILE"
CASE_PID=""
FG_PID=""

# fg_run CMD...: CMD in the background, waited for, so that INT/TERM reach the traps at once
# (bash defers them while a foreground command runs); on_exit stops it.
fg_run() {
    local rc=0
    "$@" &
    FG_PID=$!
    wait "$FG_PID" || rc=$?
    FG_PID=""
    return "$rc"
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $FG_PID ]]; then stop_pid "$FG_PID"; fi
    # The running case (a subshell) cleans up after itself on TERM; give it the chance.
    if [[ -n $CASE_PID ]] && kill -0 "$CASE_PID" 2>/dev/null; then
        kill -TERM "$CASE_PID" 2>/dev/null || true
        wait "$CASE_PID" 2>/dev/null || true
    fi
    # Backstop: every process recorded by start_bg that still runs, every namespace of this run.
    local pid ns
    if [[ -s $PIDFILE ]]; then
        while read -r pid _; do
            if kill -0 "$pid" 2>/dev/null; then stop_pid "$pid"; fi
        done < <(tac "$PIDFILE")
    fi
    while read -r ns _; do
        if [[ $ns == "$NS_PREFIX"-* ]]; then ip netns del "$ns" 2>/dev/null || true; fi
    done < <(ip netns list 2>/dev/null)
    rm -f /var/run/wireguard/dtb"$$"*.sock 2>/dev/null || true
    if ((KEEP_WORK)); then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- dependencies -------------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    if ((!APT_UPDATED)); then
        log "apt-get update"
        apt-get update -q >"$WORK/apt.log" 2>&1 || { tail -n 20 "$WORK/apt.log" >&2; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$WORK/apt.log" 2>&1 ||
        { tail -n 20 "$WORK/apt.log" >&2; die "apt-get install $* failed"; }
}

LIBIPSEC_PLUGIN=/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so
CHARON=/usr/lib/ipsec/charon
install_deps() {
    local pkgs=() c
    for c in ip:iproute2 ping:iputils-ping iperf3:iperf3 python3:python3 timeout:coreutils; do
        command -v "${c%%:*}" >/dev/null || pkgs+=("${c#*:}")
    done
    if wants dmvpnd-natt || wants base-natt; then command -v nft >/dev/null || pkgs+=(nftables); fi
    if wants boringtun; then command -v wg >/dev/null || pkgs+=(wireguard-tools); fi
    if wants libipsec; then
        [[ -x $CHARON ]] || pkgs+=(strongswan-charon)
        command -v swanctl >/dev/null || pkgs+=(strongswan-swanctl)
        [[ -e $LIBIPSEC_PLUGIN ]] || pkgs+=(libcharon-extra-plugins)
    fi
    ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
    if wants boringtun; then
        BORINGTUN=$(command -v boringtun-cli || true)
        [[ -n $BORINGTUN ]] || BORINGTUN=$(ls "${CARGO_HOME:-$HOME/.cargo}/bin/boringtun-cli" 2>/dev/null || true)
        if [[ -z $BORINGTUN ]]; then
            log "cargo install boringtun-cli --locked (a few minutes)"
            fg_run cargo install boringtun-cli --locked >"$WORK/boringtun-install.log" 2>&1 ||
                { tail -n 20 "$WORK/boringtun-install.log" >&2; die "cargo install boringtun-cli failed"; }
            BORINGTUN="${CARGO_HOME:-$HOME/.cargo}/bin/boringtun-cli"
        fi
        BORINGTUN_VERSION=$("$BORINGTUN" --version 2>/dev/null | head -n 1)
    fi
}

build_dmvpnd() {
    local target ctl_pkg
    log "building dmvpnd (cargo build --release -p dmvpnd; waits for other builds of this checkout)"
    fg_run sh -c 'cd "$1" && exec cargo build --release -q -p dmvpnd' sh "$ROOT" || die "cargo build --release -p dmvpnd failed"
    read -r target ctl_pkg < <(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
d = json.load(sys.stdin)
ctl = [p["name"] for p in d["packages"] if any(t["name"] == "dmvpnctl" and "bin" in t["kind"] for t in p["targets"])]
print(d["target_directory"], ctl[0] if ctl else "-")')
    if [[ $ctl_pkg != dmvpnd && $ctl_pkg != - ]]; then
        # dmvpnctl is a package of its own: build it too (a binary left by an older build
        # under target/release may be stale).
        log "building dmvpnctl (cargo build --release -p $ctl_pkg)"
        fg_run sh -c 'cd "$1" && exec cargo build --release -q -p "$2"' sh "$ROOT" "$ctl_pkg" ||
            die "cargo build --release -p $ctl_pkg failed"
    fi
    DMVPND="$target/release/dmvpnd"
    DMVPNCTL="$target/release/dmvpnctl"
    [[ -x $DMVPND && -x $DMVPNCTL ]] || die "no $DMVPND or $DMVPNCTL after the build"
}

# ---- tunnels --------------------------------------------------------------------------------------
# Every case runs in a subshell (run_case) with namespaces L (the "hub" side, iperf3 server) and
# R (the "spoke" side, iperf3 client; behind N, a NAT router, for dmvpnd-natt). setup_<tunnel>
# sets DST (L's address through the tunnel) and DAEMONS (PIDs whose CPU time is counted).

L_WAN=198.51.100.1
R_WAN=198.51.100.3

underlay() {
    ns_add L
    ns_add R
    veth_link L eth0 "$L_WAN/24" R eth0 "$R_WAN/24"
}

setup_veth() {
    underlay
    DST=$L_WAN
    DAEMONS=()
}

# dmvpnd hub in L, spoke in R; configurations derived from conf/ with this run's addresses.
setup_dmvpnd() {
    local nat=$1 d="$CASE_DIR/dmvpnd" psk nhrp role r_addr
    if ((nat)); then
        # R behind N: N masquerades R's 192.168.50.0/24 out of its eth0 (198.51.100.2).
        ns_add L
        ns_add N
        ns_add R
        veth_link L eth0 "$L_WAN/24" N eth0 198.51.100.2/24
        veth_link N eth1 192.168.50.1/24 R eth0 192.168.50.10/24
        nsx R ip route add default via 192.168.50.1
        nsx N sysctl -q -w net.ipv4.ip_forward=1
        nsx N nft add table ip nat
        nsx N nft add chain ip nat postrouting '{ type nat hook postrouting priority srcnat; }'
        nsx N nft add rule ip nat postrouting oifname eth0 masquerade
        r_addr=192.168.50.10
    else
        underlay
        r_addr=$R_WAN
    fi
    psk=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    nhrp=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
    for role in hub spoke; do
        mkdir -p "$d/$role"
        (umask 077; sed -e "s/^ANY = .*/ANY = \"$psk\"/" -e "s/^authentication = .*/authentication = \"$nhrp\"/" \
            "$ROOT/conf/secrets.example.toml" >"$d/$role/secrets.toml")
    done
    python3 "$HERE/mkconf.py" "$ROOT/conf/hub.toml" "$d/hub/dmvpnd.toml" \
        'underlay.interface="eth0"' "underlay.local-address=\"$L_WAN\"" \
        'tunnel.address="10.250.0.1/24"' "control.socket=\"$d/hub/dmvpnd.sock\"" ${DMVPND_SET[@]+"${DMVPND_SET[@]}"}
    python3 "$HERE/mkconf.py" "$ROOT/conf/spoke.toml" "$d/spoke/dmvpnd.toml" \
        'underlay.interface="eth0"' 'tunnel.address="10.250.0.9/24"' \
        'nhrp.nhs.address="10.250.0.1"' "nhrp.nhs.nbma=\"$L_WAN\"" "control.socket=\"$d/spoke/dmvpnd.sock\"" ${DMVPND_SET[@]+"${DMVPND_SET[@]}"}
    for role in hub spoke; do
        "$DMVPND" --check-config "$d/$role/dmvpnd.toml" >"$d/$role/check.log" 2>&1 ||
            { cat "$d/$role/check.log" >&2; log "dmvpnd --check-config $d/$role/dmvpnd.toml failed"; return 1; }
    done
    start_bg "$CASE" dmvpnd-hub "$d/hub/dmvpnd.log" \
        ip netns exec "$(ns_name L)" "$DMVPND" --foreground --config "$d/hub/dmvpnd.toml"
    DAEMONS=("$LAST_PID")
    start_bg "$CASE" dmvpnd-spoke "$d/spoke/dmvpnd.log" \
        ip netns exec "$(ns_name R)" "$DMVPND" --foreground --config "$d/spoke/dmvpnd.toml"
    DAEMONS+=("$LAST_PID")
    SPOKE_SOCK="$d/spoke/dmvpnd.sock"
    HUB_SOCK="$d/hub/dmvpnd.sock"
    wait_until "$CASE" 30 "the spoke's NHS registration up (dmvpnctl show nhrp --json)" \
        dmvpnctl_json "$SPOKE_SOCK" nhrp 'd["nhs"] and all(n["state"] == "up" for n in d["nhs"])'
    wait_until "$CASE" 15 "the spoke UP in the hub's table (dmvpnctl show dmvpn --json)" \
        dmvpnctl_json "$HUB_SOCK" dmvpn 'any(p["state"] == "UP" and p["peer_tunnel"] == "10.250.0.9" for p in d["peers"])'
    DST=10.250.0.1
    # NAT-T or not, as the spoke's Child SA says (recorded with the results).
    dmvpnctl_json "$SPOKE_SOCK" sa 'print("udp_encap=" + ",".join(str(c["udp_encap"]).lower() for p in d["peers"] for c in p["children"])) or True' \
        >>"$CASE_DIR/info" || true
    log "$CASE: spoke registered ($(tr '\n' ' ' <"$CASE_DIR/info"))"
    if ((nat)) && ! grep -q 'udp_encap=.*true' "$CASE_DIR/info"; then
        log "$CASE: the spoke's Child SA is not UDP-encapsulated behind the NAT"
        return 1
    fi
    if ((!nat)) && grep -q 'udp_encap=.*true' "$CASE_DIR/info"; then
        log "$CASE: the Child SA is UDP-encapsulated without a NAT (wanted raw ESP)"
        return 1
    fi
}

# dmvpnctl_json SOCKET WHAT PYTHON-EXPR: true if EXPR holds for `show WHAT --json` (as d).
dmvpnctl_json() {
    "$DMVPNCTL" --socket "$1" show "$2" --json 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); d=d.get('data', d) if isinstance(d, dict) and 'ok' in d else d; sys.exit(0 if ($3) else 1)"
}

# boringtun in L and R, keys and peers set with wg(8) over its UAPI socket.
setup_boringtun() {
    local d="$CASE_DIR/wg" side peer addr peer_addr peer_wan ifn
    underlay
    mkdir -p "$d"
    (umask 077; for side in L R; do wg genkey >"$d/$side.key"; wg pubkey <"$d/$side.key" >"$d/$side.pub"; done)
    DAEMONS=()
    for side in L R; do
        ifn="dtb$$${side,,}"
        start_bg "$CASE" "boringtun-$side" "$d/$side.log" \
            ip netns exec "$(ns_name "$side")" env WG_LOG_LEVEL=info "$BORINGTUN" \
            --foreground --threads 1 --disable-drop-privileges "$ifn"
        DAEMONS+=("$LAST_PID")
        wait_until "$CASE" 10 "boringtun's UAPI socket /var/run/wireguard/$ifn.sock" test -S "/var/run/wireguard/$ifn.sock"
    done
    for side in L R; do
        ifn="dtb$$${side,,}"
        if [[ $side == L ]]; then
            peer=R addr=10.251.0.1 peer_addr=10.251.0.2 peer_wan=$R_WAN
        else
            peer=L addr=10.251.0.2 peer_addr=10.251.0.1 peer_wan=$L_WAN
        fi
        nsx "$side" wg set "$ifn" private-key "$d/$side.key" listen-port 51820 \
            peer "$(cat "$d/$peer.pub")" allowed-ips "$peer_addr/32" endpoint "$peer_wan:51820"
        nsx "$side" ip addr add "$addr/24" dev "$ifn"
        nsx "$side" ip link set "$ifn" mtu 1420 up
    done
    DST=10.251.0.1
}

# strongSwan charon with kernel-libipsec in L and R: host-to-host IKEv2 PSK, AES-GCM-256 ESP in
# UDP (libipsec only does UDP-encapsulated ESP). Each charon runs in a private mount namespace
# with its own /run (charon's PID file there is fixed at build time).
setup_libipsec() {
    local d="$CASE_DIR/libipsec" side me peer psk
    underlay
    psk=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    DAEMONS=()
    for side in L R; do
        mkdir -p "$d/$side/run"
        if [[ $side == L ]]; then me=$L_WAN peer=$R_WAN; else me=$R_WAN peer=$L_WAN; fi
        cat >"$d/$side/strongswan.conf" <<EOF
charon {
    load = random nonce openssl aes gcm sha2 hmac kdf pem pkcs1 x509 pubkey curve25519 kernel-libipsec kernel-netlink socket-default vici
    install_routes = yes
    filelog {
        stderr {
            default = 1
            time_format = %H:%M:%S
        }
    }
    syslog {
    }
    plugins {
        kernel-libipsec {
            allow_peer_ts = yes
        }
        kernel-netlink {
            fwmark = !0x42
        }
        socket-default {
            fwmark = 0x42
        }
        vici {
            socket = unix://$d/$side/charon.vici
        }
    }
}
EOF
        (umask 077; cat >"$d/$side/swanctl.conf" <<EOF
connections {
    bench {
        version = 2
        local_addrs = $me
        remote_addrs = $peer
        encap = yes
        proposals = aes256gcm16-prfsha512-ecp256
        local {
            auth = psk
            id = $me
        }
        remote {
            auth = psk
            id = $peer
        }
        children {
            bench {
                mode = tunnel
                esp_proposals = aes256gcm16
            }
        }
    }
}
secrets {
    ike-bench {
        id-1 = $me
        id-2 = $peer
        secret = 0x$psk
    }
}
EOF
        )
        start_bg "$CASE" "charon-$side" "$d/$side/charon.log" \
            ip netns exec "$(ns_name "$side")" unshare --mount --propagation private \
            sh -c 'mount --bind "$1" /run && exec env STRONGSWAN_CONF="$2" "$3"' sh \
            "$d/$side/run" "$d/$side/strongswan.conf" "$CHARON"
        DAEMONS+=("$LAST_PID")
        wait_until "$CASE" 15 "charon's vici socket $d/$side/charon.vici" test -S "$d/$side/charon.vici"
        swanctl --load-all --file "$d/$side/swanctl.conf" --uri "unix://$d/$side/charon.vici" \
            >"$d/$side/swanctl-load.log" 2>&1 ||
            { cat "$d/$side/swanctl-load.log" >&2; log "swanctl --load-all failed"; return 1; }
    done
    if ! timeout 30 swanctl --initiate --child bench --timeout 20 --uri "unix://$d/R/charon.vici" \
        >"$d/R/swanctl-initiate.log" 2>&1; then
        tail -n 20 "$d/R/swanctl-initiate.log" >&2
        log "$CASE: swanctl --initiate failed"
        log_tails "$CASE"
        return 1
    fi
    DST=$L_WAN
}

# ---- measurements ---------------------------------------------------------------------------------

# iperf_client NAME ARGS...: iperf3 from R to DST, JSON to CASE_DIR/NAME.json; a failure is
# logged and leaves the JSON (with its "error") for the report.
iperf_client() {
    local name=$1
    shift
    if ! timeout $((SECS + 30)) ip netns exec "$(ns_name R)" iperf3 -c "$DST" -t "$SECS" -J \
        --connect-timeout 5000 "$@" >"$CASE_DIR/$name.json" 2>"$CASE_DIR/$name.err"; then
        log "$CASE: iperf3 $name failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","?"))' \
            "$CASE_DIR/$name.json" 2>/dev/null || head -c 300 "$CASE_DIR/$name.err")"
        return 0
    fi
}

# The UDP counters of namespace $1 that name a loss (RFC 4113 names, from /proc/net/snmp):
# InErrors, RcvbufErrors, SndbufErrors.
udp_snmp() {
    nsx "$1" awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) c[$i] = i; h = 1 } else
        print $c["InErrors"], $c["RcvbufErrors"], $c["SndbufErrors"] }' /proc/net/snmp
}

# Packets dropped machine-wide at a full per-CPU input backlog (/proc/net/softnet_stat,
# second column, hex).
backlog_drops() {
    local sum=0 d
    while read -r _ d _; do sum=$((sum + 16#$d)); done </proc/net/softnet_stat
    echo "$sum"
}

udp_snmp_delta() {
    local -a a=($1) b=($2)
    echo "InErrors+$((b[0] - a[0])) RcvbufErrors+$((b[1] - a[1])) SndbufErrors+$((b[2] - a[2]))"
}

measure() {
    local before after
    start_bg "$CASE" iperf3-server "$CASE_DIR/iperf3-server.log" \
        ip netns exec "$(ns_name L)" iperf3 -s
    wait_until "$CASE" 10 "the iperf3 server listening in L" \
        sh -c "ip netns exec '$(ns_name L)' ss -Hltn 'sport = :5201' | grep -q ."
    wait_until "$CASE" 15 "a ping through the tunnel to $DST" \
        ip netns exec "$(ns_name R)" ping -n -c 1 -W 1 "$DST"
    log "$CASE: ping x$PINGS"
    ip netns exec "$(ns_name R)" ping -n -c "$PINGS" -i 0.01 -W 1 "$DST" >"$CASE_DIR/ping.txt" 2>&1 || true
    log "$CASE: TCP 1 stream"
    if ((${#DAEMONS[@]})); then before=$(cpu_ticks "${DAEMONS[@]}"); fi
    iperf_client tcp1
    if ((${#DAEMONS[@]})); then
        after=$(cpu_ticks "${DAEMONS[@]}")
        echo "$before $after $(getconf CLK_TCK)" >"$CASE_DIR/cpu.txt"
    fi
    log "$CASE: TCP 1 stream -R"
    iperf_client tcp1r -R
    log "$CASE: TCP 4 streams"
    iperf_client tcp4 -P 4
    log "$CASE: UDP 1360 bytes at $UDP_RATE"
    iperf_client udp -u -l 1360 -b "$UDP_RATE" -w "$UDP_WINDOW"
    log "$CASE: UDP 1360 bytes at $UDP_GOAL_RATE (the goal's rate)"
    local l0 r0 b0
    l0=$(udp_snmp L) r0=$(udp_snmp R) b0=$(backlog_drops)
    iperf_client udpgoal -u -l 1360 -b "$UDP_GOAL_RATE" -w "$UDP_WINDOW"
    # Where the goal test's losses fell: the UDP receive queues of each end's namespace (L
    # holds the hub and the iperf3 server, R the spoke and the client), and the kernel's
    # per-CPU input backlog that veth delivers through (netdev_max_backlog; machine-wide).
    echo "udpgoal losses: L UDP $(udp_snmp_delta "$l0" "$(udp_snmp L)"); R UDP $(udp_snmp_delta "$r0" "$(udp_snmp R)"); backlog drops+$(($(backlog_drops) - b0))" >>"$CASE_DIR/info"
    alive_or_explain "$CASE" || { log "$CASE: a daemon died during the measurements"; return 1; }
}

# run_case TUNNEL ROUND (in a subshell): setup, measure, teardown.
run_case() {
    CASE="$1-r$2"
    CASE_DIR="$RES/$1/$2"
    mkdir -p "$CASE_DIR"
    NS_PREFIX="dtb-$$-$1-$2"
    trap 'set +e; stop_group "$CASE"; for n in L N R; do ns_del "$n"; done' EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    case $1 in
        veth) setup_veth ;;
        dmvpnd-esp) setup_dmvpnd 0 ;;
        dmvpnd-natt) setup_dmvpnd 1 ;;
        base-esp) DMVPND=$BASELINE/dmvpnd DMVPNCTL=$BASELINE/dmvpnctl setup_dmvpnd 0 ;;
        base-natt) DMVPND=$BASELINE/dmvpnd DMVPNCTL=$BASELINE/dmvpnctl setup_dmvpnd 1 ;;
        boringtun) setup_boringtun ;;
        libipsec) setup_libipsec ;;
    esac
    measure
    case $1 in
        dmvpnd-*) dmvpnd_drops ;;
        base-*) DMVPNCTL=$BASELINE/dmvpnctl dmvpnd_drops ;;
        libipsec) libipsec_info ;;
    esac
}

# Non-zero dataplane drop counters of both dmvpnd ends after the measurements, for the report.
dmvpnd_drops() {
    local role sock
    for role in hub spoke; do
        if [[ $role == hub ]]; then sock=$HUB_SOCK; else sock=$SPOKE_SOCK; fi
        dmvpnctl_json "$sock" interface \
            "print('$role drops: ' + (', '.join(f'{k}={v}' for k, v in sorted(d['drops'].items()) if v) or 'none')) or True" \
            >>"$CASE_DIR/info" || true
        # What the kernel dropped at the TUN device (a full queue toward a reader, say), which
        # dmvpnd's own counters cannot see.
        nsx "$([[ $role == hub ]] && echo L || echo R)" ip -s -j link show dmvpn0 2>/dev/null |
            python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print("'"$role"' tun: tx_dropped=%d rx_dropped=%d" % (s["tx"]["dropped"], s["rx"]["dropped"]))' \
            >>"$CASE_DIR/info" || true
    done
}

# The ESP proposal charon chose and the packets its TUN device carried, for the report.
libipsec_info() {
    local prop pkts
    prop=$(grep -o 'selected proposal: ESP:[^ ]*' "$CASE_DIR/libipsec/R/charon.log" | head -n 1 | sed 's/.*ESP:/esp=/')
    pkts=$(ip -n "$(ns_name R)" -s link show ipsec0 2>/dev/null | awk '/RX:/ {getline; rx = $2} /TX:/ {getline; tx = $2} END {print "ipsec0 rx=" rx " tx=" tx}')
    echo "${prop:-esp=?} in UDP 4500, spoke $pkts packets" >>"$CASE_DIR/info"
}

# ---- main -----------------------------------------------------------------------------------------

install_deps
if wants dmvpnd-esp || wants dmvpnd-natt; then build_dmvpnd; fi
remove_stale_namespaces

cpu_model=$(sed -n 's/^model name\s*:\s*//p' /proc/cpuinfo | head -n 1)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $cpu_model, $(nproc) CPUs, kernel $(uname -r), load average $load_before"
log "tunnels: ${TUNNELS[*]}; $ROUNDS rounds, ${SECS}s per iperf3 test, UDP at $UDP_RATE and $UDP_GOAL_RATE, iperf3 -w $UDP_WINDOW"
started=$SECONDS
FAILED=0
SKIP=()
if wants libipsec; then
    if [[ ! -e $LIBIPSEC_PLUGIN ]]; then SKIP+=("libipsec:no $LIBIPSEC_PLUGIN (package libcharon-extra-plugins)")
    elif [[ ! -c /dev/net/tun ]]; then SKIP+=("libipsec:no /dev/net/tun"); fi
fi
skipped() {
    local s
    for s in "${SKIP[@]}"; do [[ ${s%%:*} == "$1" ]] && { echo "${s#*:}"; return 0; }; done
    return 1
}
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TUNNELS[@]}"; do
        if reason=$(skipped "$t"); then
            mkdir -p "$RES/$t"
            echo "$reason" >"$RES/$t/skipped"
            ((round > 1)) || log "== $t skipped: $reason"
            continue
        fi
        log "== round $round/$ROUNDS: $t"
        rc=0
        (run_case "$t" "$round") &
        CASE_PID=$!
        wait "$CASE_PID" || rc=$?
        CASE_PID=""
        if ((rc)); then
            log "$t round $round FAILED (exit $rc); see the messages above"
            echo "setup or measurement failed (exit $rc)" >"$RES/$t/$round/error"
            FAILED=1
        fi
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RES/meta.json" <<EOF
import json, sys
json.dump({
    "cpu_model": """$cpu_model""", "cpus": $(nproc), "kernel": "$(uname -r)",
    "load_before": "$load_before", "load_after": "$load_after",
    "rounds": $ROUNDS, "seconds": $SECS, "udp_rate": "$UDP_RATE", "udp_goal_rate": "$UDP_GOAL_RATE", "udp_window": "$UDP_WINDOW", "dmvpnd_set": """${DMVPND_SET[*]:-}""".split(), "udp_len": 1360, "pings": $PINGS,
    "tunnels": "${TUNNELS[*]}".split(), "duration_s": $((SECONDS - started)),
    "boringtun": """${BORINGTUN_VERSION:-}""", "commit": "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')", "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
}, open(sys.argv[1], "w"), indent=1)
EOF
python3 "$HERE/report.py" "$RES" --json "$JSON_OUT"
log "JSON: $JSON_OUT; $((SECONDS - started)) s"
exit "$FAILED"
