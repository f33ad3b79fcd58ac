# Helpers for benches/tunnel/run.sh: namespaces, background processes, bounded waits.
# Sourced, not run. Namespaces and processes created here are recorded (NAMESPACES, PIDS and
# $PIDFILE) so that stop_group / ns_del and run.sh's exit trap remove them.

# Namespaces are "dtb-<pid of run.sh>-<name>": unique per run, and those of a dead run are
# recognised by their PID (remove_stale_namespaces).
NS_PREFIX="dtb-$$"
NAMESPACES=()
PIDS=()          # every background process started, in order
declare -A PID_GROUP=() PID_NAME=() PID_LOG=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ns_add NAME -> creates namespace "$NS_PREFIX-NAME" (IPv6 off, lo up), echoes nothing.
ns_name() { printf '%s-%s' "$NS_PREFIX" "$1"; }
ns_add() {
    local ns
    ns=$(ns_name "$1")
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
    ip -n "$ns" link set lo up
}
ns_del() {
    local ns i
    ns=$(ns_name "$1")
    ip netns del "$ns" 2>/dev/null || true
    for i in "${!NAMESPACES[@]}"; do
        if [[ ${NAMESPACES[$i]} == "$ns" ]]; then unset 'NAMESPACES[i]'; fi
    done
    return 0
}
nsx() { local ns; ns=$(ns_name "$1"); shift; ip netns exec "$ns" "$@"; }

# veth_link NS_A IF_A CIDR_A NS_B IF_B CIDR_B: a veth pair between two namespaces, addressed, up.
veth_link() {
    local a=$1 aif=$2 acidr=$3 b=$4 bif=$5 bcidr=$6 tmp="dtb$$x${RANDOM}"
    ip link add "${tmp}a" netns "$(ns_name "$a")" type veth peer name "${tmp}b" netns "$(ns_name "$b")"
    ip -n "$(ns_name "$a")" link set "${tmp}a" name "$aif"
    ip -n "$(ns_name "$b")" link set "${tmp}b" name "$bif"
    if [[ -n $acidr ]]; then ip -n "$(ns_name "$a")" addr add "$acidr" dev "$aif"; fi
    if [[ -n $bcidr ]]; then ip -n "$(ns_name "$b")" addr add "$bcidr" dev "$bif"; fi
    ip -n "$(ns_name "$a")" link set "$aif" up
    ip -n "$(ns_name "$b")" link set "$bif" up
}

# Deletes namespaces dtb-<pid>-* whose run.sh is gone (a crash or SIGKILL of an earlier run).
remove_stale_namespaces() {
    local ns pid
    while read -r ns _; do
        [[ $ns =~ ^dtb-([0-9]+)- ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ $pid == "$$" || -d /proc/$pid ]] && continue
        log "removing stale namespace $ns (run $pid is gone)"
        ip netns del "$ns" 2>/dev/null || true
    done < <(ip netns list 2>/dev/null)
}

# start_bg GROUP NAME LOG CMD...: runs CMD in the background (stdout+stderr to LOG), records
# its PID under GROUP. CMD must exec its program (ip netns exec, unshare and "exec" all do),
# so the recorded PID is the daemon's own and /proc/PID/stat counts its CPU time.
# Sets LAST_PID; also appends "PID NAME" to $PIDFILE (the backstop of run.sh's exit trap).
start_bg() {
    local group=$1 name=$2 logf=$3
    shift 3
    "$@" >"$logf" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    PID_GROUP[$LAST_PID]=$group
    PID_NAME[$LAST_PID]=$name
    PID_LOG[$LAST_PID]=$logf
    [[ -n ${PIDFILE:-} ]] && echo "$LAST_PID $name" >>"$PIDFILE"
    return 0
}

# stop_pid PID: SIGTERM, up to 5 s grace, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
    return 0
}

# stop_group GROUP: stops that group's processes, newest first.
stop_group() {
    local group=$1 i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]:-}
        [[ -n $pid && ${PID_GROUP[$pid]:-} == "$group" ]] || continue
        stop_pid "$pid"
        unset 'PIDS[i]'
    done
    PIDS=("${PIDS[@]}")
    return 0
}

# alive_or_explain GROUP: 0 if every process of GROUP runs; else prints which one exited and
# its log tail, returns 1.
alive_or_explain() {
    local group=$1 pid ok=0
    for pid in "${PIDS[@]}"; do
        [[ ${PID_GROUP[$pid]:-} == "$group" ]] || continue
        if ! kill -0 "$pid" 2>/dev/null; then
            log "${PID_NAME[$pid]} (pid $pid) exited; last lines of ${PID_LOG[$pid]}:"
            tail -n 25 "${PID_LOG[$pid]}" >&2
            ok=1
        fi
    done
    return $ok
}

# log_tails GROUP: the last lines of every log of GROUP (for a failed wait).
log_tails() {
    local group=$1 pid
    for pid in "${PIDS[@]}"; do
        [[ ${PID_GROUP[$pid]:-} == "$group" ]] || continue
        log "--- last lines of ${PID_NAME[$pid]} (pid $pid) log ${PID_LOG[$pid]}:"
        tail -n 25 "${PID_LOG[$pid]}" >&2
    done
}

# wait_until GROUP SECONDS WHAT CMD...: polls CMD every 0.2 s until it succeeds, at most
# SECONDS; fails (returns 1) with WHAT, and the group's log tails, when it does not or when a
# process of GROUP dies.
wait_until() {
    local group=$1 secs=$2 what=$3 deadline
    shift 3
    deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        alive_or_explain "$group" || { log "$group: a daemon died while waiting for: $what"; return 1; }
        sleep 0.2
    done
    log "$group: timed out after ${secs}s waiting for: $what"
    log_tails "$group"
    return 1
}

# cpu_ticks PID...: utime+stime (clock ticks) summed over the PIDs, from /proc/PID/stat.
cpu_ticks() {
    local pid sum=0 stat rest f
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || return 1
        rest=${stat##*) }            # fields from 3 (state) on; comm may contain spaces
        read -r -a f <<<"$rest"
        sum=$((sum + f[11] + f[12])) # fields 14 and 15 of stat: utime, stime
    done
    echo "$sum"
}
