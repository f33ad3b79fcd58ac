# Helpers for the scenarios that run dmvpnd against the VMs. Source after lib.sh:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"; . "$IX_DIR/dmvpnd-lib.sh"
# Then: dx_init NAME (log dir, lock, leftovers, trap), dx_config ..., dx_start ..., dx_ctl ..., dx_pass.
#
# Binaries: $DMVPND_BIN_DIR if set; otherwise this checkout's dmvpnd and dmvpnctl, (re)built with
# `cargo build --release -p dmvpnd -p dmvpnctl` (incremental: quick when up to date), so the suite
# always tests the code it ships with and never a binary left over from another build.
# Every dmvpnd instance gets a directory $LOGS/<inst>/ with its config (derived from conf/spoke.toml or
# conf/hub.toml, only addresses, secrets, control socket, key-export dir and -- where a scenario says so --
# DPD timers changed), secrets.toml (0600), ctl.sock, keys/wireshark/{esp_sa,ikev2_decryption_table} and
# dmvpnd.log (stderr).
IX_REPO=$(cd "$IX_DIR/../.." && pwd)
RIG="$IX_DIR/rig.sh"
IX_DUT_NS=${IX_DUT_NS:-dmvpn-ix-dut}          # namespace of the (first) dmvpnd
IX_DUT_NBMA=${IX_DUT_NBMA:-$IX_WAN_NET.9}
IX_DUT_TUNNEL=${IX_DUT_TUNNEL:-10.250.0.9}
IX_TUNNEL_NET=${IX_TUNNEL_NET:-10.250.0.0/24}  # the rig's tunnel subnet (ixvm.py --tunnel-net)
IX_PSK_VALUE=${IX_PSK:-dmvpn-interop-psk}     # the rig's defaults (ixvm.py)
IX_NHRP_KEY_VALUE=${IX_NHRP_KEY:-keykey00}
DX_PIDS=()            # dmvpnd processes started by this scenario
DX_BG_PIDS=()         # other background helpers (tcpdump, ping)
status=1

dx_bin_dir() {
    if [ -n "${DMVPND_BIN_DIR:-}" ]; then
        echo "$DMVPND_BIN_DIR"
        return 0
    fi
    ix_log "building dmvpnd and dmvpnctl (release)"
    (cd "$IX_REPO" && cargo build --release -q -p dmvpnd -p dmvpnctl) >&2 || return 1
    echo "${CARGO_TARGET_DIR:-$IX_REPO/target}/release"
}

# dx_init NAME: log directory, one-rig lock, clean leftovers, trap; sets LOGS, DX_BIN, T0.
dx_init() {
    IX_TEST=$1
    LOGS=${IX_LOGS:-$IX_CACHE/logs/$1-$(date +%Y%m%d-%H%M%S)}
    T0=$SECONDS
    ls -dt "$IX_CACHE"/logs/"$1"-* 2>/dev/null | tail -n +10 | xargs -r rm -rf || true
    [ "$(id -u)" = 0 ] || ix_fail "needs root (network namespaces, taps, TUN)"
    mkdir -p "$IX_CACHE" "$LOGS"
    ix_lock
    DX_BIN=$(dx_bin_dir) || ix_fail "cannot build dmvpnd"
    ix_log "dmvpnd: $DX_BIN/dmvpnd ($("$DX_BIN/dmvpnd" --version 2>&1)); logs in $LOGS"
    "$RIG" down 2>/dev/null || true
    trap dx_cleanup EXIT
    trap 'exit 130' INT TERM
}

dx_stop_bg() {
    local p
    for p in "${DX_BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    DX_BG_PIDS=()
}

# dx_stop INST: stop that dmvpnd (SIGTERM, then SIGKILL after 5 s)
dx_stop() {
    local inst=$1 pid
    pid=$(cat "$LOGS/$inst/pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || true
    local i
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$LOGS/$inst/pid"
}

dx_cleanup() {
    local rc=$? inst d vm vms=()
    set +e
    dx_stop_bg
    if ((status != 0)); then
        for d in "$LOGS"/*/; do
            inst=$(basename "$d")
            [ -S "$d/ctl.sock" ] || continue
            for w in dmvpn sa nhrp ike interface; do
                echo "== dmvpnctl show $w"; "$DX_BIN/dmvpnctl" --socket "$d/ctl.sock" show "$w" 2>&1
            done > "$LOGS/$inst-state.txt" 2>&1
        done
        # (a VM a scenario left paused would time out every exec: thaw it first)
        for vm in "$IX_HUB" "$IX_SPOKE"; do
            [ -f "$IX_CACHE/vms/$vm/qemu.pid" ] && { ix_vm resume "$vm" >/dev/null 2>&1; vms+=("$vm"); }
        done
        ((${#vms[@]} == 0)) || ix_collect_logs "$LOGS" "${vms[@]}" >/dev/null 2>&1
    fi
    for d in "$LOGS"/*/; do [ -f "$d/pid" ] && dx_stop "$(basename "$d")"; done
    if ((status != 0)); then
        for d in "$LOGS"/*/; do
            [ -f "$d/dmvpnd.log" ] || continue
            ix_log "---- last lines of $(basename "$d")/dmvpnd.log:"
            tail -n 40 "$d/dmvpnd.log" | sed 's/^/    /' >&2
        done
        for vm in "$IX_HUB" "$IX_SPOKE"; do
            [ -s "$LOGS/$vm-charon.log" ] || continue
            ix_log "---- last lines of $vm charon.log:"
            tail -n 25 "$LOGS/$vm-charon.log" | sed 's/^/    /' >&2
        done
        ix_log "all logs: $LOGS"
    fi
    "$RIG" down >/dev/null 2>&1 || true
    ((status == 0)) && ix_log "PASS in $((SECONDS - T0))s" || ix_log "FAILED after $((SECONDS - T0))s"
    exit $(( status != 0 ? 1 : rc ))
}

dx_pass() { status=0; echo "$IX_TEST: 1 passed, 0 failed"; }

# dx_config INST ROLE [key=value...]: write $LOGS/INST/dmvpnd.toml from conf/<ROLE>.toml.
# keys: tunnel=ADDR (spoke), nhs_nbma=IP (spoke), local=IP (hub), psk=S, nhrp_key=K, dpd_delay=N, dpd_retry=N,
#       host=1 (spoke: tunnel address as a /32 with `network = "10.250.0.0/24"`, FRR-style), routes=none (no [[route]])
dx_config() {
    local inst=$1 role=$2; shift 2
    local tunnel=$IX_DUT_TUNNEL nhs_nbma=$IX_HUB_NBMA local=$IX_DUT_NBMA psk=$IX_PSK_VALUE nhrp_key=$IX_NHRP_KEY_VALUE
    local dpd_delay= dpd_retry= host= routes= kv
    for kv in "$@"; do
        case ${kv%%=*} in
            tunnel) tunnel=${kv#*=} ;; nhs_nbma) nhs_nbma=${kv#*=} ;; local) local=${kv#*=} ;;
            psk) psk=${kv#*=} ;; nhrp_key) nhrp_key=${kv#*=} ;;
            dpd_delay) dpd_delay=${kv#*=} ;; dpd_retry) dpd_retry=${kv#*=} ;;
            host) host=${kv#*=} ;; routes) routes=${kv#*=} ;;
            *) ix_fail "dx_config: unknown key $kv" ;;
        esac
    done
    local d="$LOGS/$inst"
    mkdir -p "$d"
    local sed_args=()
    if [ "$role" = spoke ]; then
        if [ -z "$host" ]; then
            sed_args+=(-e "s|^address = \"10\.250\.0\.9/24\"|address = \"$tunnel/24\"|")
        else
            sed_args+=(-e "s|^address = \"10\.250\.0\.9/24\".*|address = \"$tunnel/32\"\nnetwork = \"$IX_TUNNEL_NET\"|")
        fi
        sed_args+=(-e "s|^nbma = \"198\.51\.100\.1\"|nbma = \"$nhs_nbma\"|")
    else
        sed_args+=(-e "s|^local-address = \"198\.51\.100\.1\"|local-address = \"$local\"|")
    fi
    [ -z "$dpd_delay" ] || sed_args+=(-e "/^\[ike\.dpd\]/,/^\[/ s|^delay = [0-9]*|delay = $dpd_delay|")
    [ -z "$dpd_retry" ] || sed_args+=(-e "/^\[ike\.dpd\]/,/^\[/ s|^retry = [0-9]*|retry = $dpd_retry|")
    [ "$routes" != none ] || sed_args+=(-e '/^\[\[route\]\]/,/^$/d')
    sed "${sed_args[@]}" "$IX_REPO/conf/$role.toml" > "$d/dmvpnd.toml"
    cat >> "$d/dmvpnd.toml" <<EOF

# interop harness ($IX_TEST): one control socket per daemon, Wireshark keys of this run
[control]
socket = "$d/ctl.sock"

[debug]
key-export = "$d/keys/wireshark"
EOF
    (umask 077; printf '[psk]\nANY = "%s"\n\n[nhrp]\nauthentication = "%s"\n' "$psk" "$nhrp_key" > "$d/secrets.toml")
    chmod 0644 "$d/dmvpnd.toml"
    local out
    out=$("$DX_BIN/dmvpnd" --check-config "$d/dmvpnd.toml" 2>&1) || ix_fail "$inst: configuration rejected: $out"
    ix_log "$inst: $out"
    diff -u "$IX_REPO/conf/$role.toml" "$d/dmvpnd.toml" > "$d/config.diff" || true
}

# dx_start INST NS: run dmvpnd (config from dx_config) in netns NS, wait for its control socket.
dx_start() {
    local inst=$1 ns=$2 d="$LOGS/$1"
    rm -f "$d/ctl.sock"
    ip netns exec "$ns" env DMVPND_LOG="${DMVPND_LOG:-info}" "$DX_BIN/dmvpnd" --foreground \
        --config "$d/dmvpnd.toml" >> "$d/dmvpnd.log" 2>&1 &
    echo $! > "$d/pid"
    DX_PIDS+=($!)
    local i
    for i in $(seq 100); do
        [ -S "$d/ctl.sock" ] && { ix_log "$inst: dmvpnd pid $(cat "$d/pid") running in $ns"; return 0; }
        kill -0 "$(cat "$d/pid")" 2>/dev/null || ix_fail "$inst: dmvpnd exited at start"
        sleep 0.1
    done
    ix_fail "$inst: no control socket after 10 s"
}

dx_ctl() { local inst=$1; shift; "$DX_BIN/dmvpnctl" --socket "$LOGS/$inst/ctl.sock" "$@"; }

# dx_wait_log INST TIMEOUT REGEX [MIN_COUNT]: wait until dmvpnd's log has MIN_COUNT (1) lines matching REGEX
dx_wait_log() {
    local inst=$1 timeout=$2 re=$3 n=${4:-1} end=$((SECONDS + $2))
    while :; do
        (($(grep -Ec -- "$re" "$LOGS/$inst/dmvpnd.log" 2>/dev/null || true) >= n)) && return 0
        ((SECONDS < end)) || return 1
        kill -0 "$(cat "$LOGS/$inst/pid" 2>/dev/null)" 2>/dev/null || ix_fail "$inst: dmvpnd died"
        sleep 1
    done
}

# dx_wait_ctl INST TIMEOUT REGEX ARGS...: re-run dmvpnctl ARGS until the output matches; output in DX_OUT
dx_wait_ctl() {
    local inst=$1 timeout=$2 re=$3; shift 3
    local end=$((SECONDS + timeout))
    while :; do
        DX_OUT=$(dx_ctl "$inst" "$@" 2>&1) || true
        grep -Eq -- "$re" <<<"$DX_OUT" && return 0
        ((SECONDS < end)) || return 1
        sleep 1
    done
}

# dx_capture FILE: tcpdump of IKE/ESP/GRE/NAT-T on the WAN bridge in the background
dx_capture() {
    ip netns exec "$IX_WAN_NS" tcpdump -i "$IX_BRIDGE" -nn -U -s 0 -w "$1" \
        'ip proto 47 or ip proto 50 or udp port 500 or udp port 4500' 2>/dev/null &
    DX_BG_PIDS+=($!)
    sleep 1
}

# dx_ping NS SRC DST [COUNT]: ping over the tunnel from a dmvpnd namespace; output in DX_OUT
dx_ping() {
    DX_OUT=$(ip netns exec "$1" ping -c "${4:-3}" -i 0.5 -W 2 -I "$2" "$3" 2>&1)
}

# dx_esc ADDR: an IPv4 address as a regex
dx_esc() { printf '%s' "${1//./\\.}"; }
