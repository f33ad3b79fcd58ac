# Shared helpers for interop scenario scripts. Source it: . "$(dirname "$0")/lib.sh"
# Defaults can be overridden from the environment.
IX_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IX_CACHE=${IX_CACHE:-/var/tmp/dmvpnd-interop}
export IX_CACHE
IX_WAN_NS=${IX_WAN_NS:-dmvpn-ix-wan}     # netns holding the "internet" bridge
IX_BRIDGE=${IX_BRIDGE:-br-wan}
IX_WAN_NET=${IX_WAN_NET:-198.51.100}     # TEST-NET-2, only ever inside our namespaces
IX_HUB=${IX_HUB:-ix-hub}                 # VM names
IX_SPOKE=${IX_SPOKE:-ix-spoke}
IX_HUB_NBMA=${IX_HUB_NBMA:-$IX_WAN_NET.1}
IX_SPOKE_NBMA=${IX_SPOKE_NBMA:-$IX_WAN_NET.3}
IX_HUB_TUNNEL=${IX_HUB_TUNNEL:-10.250.0.1}
IX_SPOKE_TUNNEL=${IX_SPOKE_TUNNEL:-10.250.0.5}
IX_OBSERVER=${IX_OBSERVER:-$IX_WAN_NET.254}  # the bridge's own address in the WAN netns (debugging, captures)
IX_NAT_NS=${IX_NAT_NS:-dmvpn-ix-nat}
IX_NAT_WAN=${IX_NAT_WAN:-$IX_WAN_NET.100}
IX_NAT_LAN_NET=${IX_NAT_LAN_NET:-192.168.77}

# One rig per machine at a time: the namespace, tap and VM names are fixed, so the lock is machine-wide,
# not per IX_CACHE (two runs with different caches would otherwise share dmvpn-ix-wan and its taps).
IX_LOCK=${IX_LOCK:-/run/lock/dmvpnd-interop.lock}

ix_log() { printf '%s [%s] %s\n' "$(date +%T)" "${IX_TEST:-interop}" "$*" >&2; }
ix_fail() { ix_log "FAIL: $*"; exit 1; }

# ix_vm ARGS...: the VM manager (vm.sh)
ix_vm() { python3 "$IX_DIR/ixvm.py" "$@"; }

# ix_exec VM CMD...: run a command in a VM, output on stdout, its exit status as ours
ix_exec() { local vm=$1; shift; ix_vm exec "$vm" -- "$@"; }

# ix_wait VM TIMEOUT REGEX CMD...: re-run CMD in VM until its output matches the extended REGEX.
# Leaves the last output in $IX_OUT; returns 1 on timeout.
ix_wait() {
    local vm=$1 timeout=$2 re=$3; shift 3
    local end=$((SECONDS + timeout))
    while :; do
        IX_OUT=$(ix_exec "$vm" "$@" 2>&1) || true
        if grep -Eq -- "$re" <<<"$IX_OUT"; then return 0; fi
        ((SECONDS < end)) || return 1
        sleep 2
    done
}

# ix_collect_logs DIR VM...: copy charon, FRR and console logs of the VMs into DIR (best effort)
ix_collect_logs() {
    local dir=$1; shift
    mkdir -p "$dir"
    local vm
    for vm in "$@"; do
        ix_exec "$vm" sh -c 'swanctl --list-sas; ip xfrm state; ip xfrm policy; vtysh -c "show ip nhrp cache" \
            -c "show ip nhrp nhs" -c "show running-config"; ip addr; ip route; ip neigh' > "$dir/$vm-state.txt" 2>&1
        ix_exec "$vm" cat /var/log/charon.log > "$dir/$vm-charon.log" 2>&1
        ix_exec "$vm" cat /var/log/frr/frr.log > "$dir/$vm-frr.log" 2>&1
        cp "$IX_CACHE/vms/$vm/console.log" "$dir/$vm-console.log" 2>/dev/null
    done
    ix_log "logs in $dir"
}

# ix_lock: take the machine-wide rig lock (fd 8, held until the script exits; waits for a concurrent run
# up to 30 min), then remove what a run that died without its cleanup left behind. Holding the lock, every
# namespace named dmvpn-ix-* is such a leftover: its processes (the qemu of a VM, a dmvpnd, a tcpdump) were
# started by that run inside the namespace it created; they are stopped by PID and the namespace -- with
# its taps and veths -- deleted. Without this, a killed run's qemu keeps its tap and every later "rig up"
# fails with "ioctl(TUNSETIFF): Device or resource busy".
ix_lock() {
    mkdir -p "$(dirname "$IX_LOCK")"
    exec 8>"$IX_LOCK"
    flock -w 1800 8 || ix_fail "another interop run holds $IX_LOCK"
    ix_reap_leftovers
}

ix_reap_leftovers() {
    local ns pids p i
    for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^dmvpn-ix-/ {print $1}'); do
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        ix_log "leftover namespace $ns of an interrupted run: deleting it${pids:+, stopping pids $pids}"
        for p in $pids; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
        for i in $(seq 50); do
            [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] || break
            sleep 0.1
        done
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null || ix_log "warning: cannot delete namespace $ns"
    done
    return 0
}
