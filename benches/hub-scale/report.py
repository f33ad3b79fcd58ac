#!/usr/bin/env python3
"""Print the summary table of a hub-scale result file (benches/hub-scale/run.sh --json FILE).

    report.py [FILE]        default: last-run.json beside this script
"""

import json
import os
import sys


def fmt(v, spec="{:.0f}", none="-"):
    return none if v is None else spec.format(v)


def show_ms(run, what):
    for s in run.get("show", []):
        if s["what"] == what:
            if s.get("error"):
                return f"failed ({s['error'][:40]})"
            return f"{s['ms']:.0f} ms ({s['rows']} rows)"
    return "-"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "last-run.json")
    doc = json.load(open(path))
    m = doc["machine"]
    print(f"\nhub-scale, {doc['date']}, commit {doc['commit']}: {m['cpu']}, {m['nproc']} CPUs, "
          f"{m['mem_gib']} GiB, kernel {m['kernel']}; load {' '.join(m['load_before'])} before, "
          f"{' '.join(m['load_after'])} after; {doc['in_flight']} setups in flight"
          f"{', NAT-T (ESP in UDP 4500)' if doc['natt'] else ', raw ESP'}\n")
    cols = ["N", "hub CPUs", "registered", "time to register all", "registrations/s",
            "hub CPU per spoke", "hub RSS", "RSS per spoke", "IKE handshake p50 / p99",
            "show dmvpn --json", "show nhrp --json", "generator CPU per spoke"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in doc["runs"]:
        hs = r["ike_handshake_ms"]
        rss = r.get("hub_rss_after_bytes")
        row = [
            f"{r['spokes']:,}",
            "1 (pinned)" if r["cores"] == 1 else "2",
            f"{r['registered']:,}",
            f"{r['time_to_register_all_s']:.2f} s",
            f"{r['registrations_per_s']:,.0f}",
            fmt(r.get("hub_cpu_per_spoke_ms"), "{:.2f} ms"),
            fmt(rss and rss / 1e6, "{:.0f} MB"),
            fmt(r.get("hub_rss_per_spoke_bytes") and r["hub_rss_per_spoke_bytes"] / 1e3, "{:.1f} kB"),
            f"{fmt(hs['p50'], '{:.0f}')} / {fmt(hs['p99'], '{:.0f}')} ms",
            show_ms(r, "dmvpn"),
            show_ms(r, "nhrp"),
            f"{r['generator_cpu_per_spoke_ms']:.2f} ms",
        ]
        print("| " + " | ".join(row) + " |")
    for r in doc["runs"]:
        b = r["registrations_per_1s_bucket"]
        print(f"\nN={r['spokes']:,}, {r['cores']} CPU(s): registrations per 1 s bucket: {' '.join(map(str, b))}")
        if r.get("hub_cpu_pct_per_1s"):
            print(f"  hub CPU % per 1 s: {' '.join(f'{c:.0f}' for c in r['hub_cpu_pct_per_1s'])}")
        loop = r.get("control_loop")
        if loop:
            print(f"  hub control loop: {loop['turns']:,} turns, longest {loop['longest_ms']:.1f} ms "
                  f"({loop['longest_event']}), {loop['over_budget']} over 50 ms")
        s = r.get("soak", {})
        if s.get("secs"):
            rss = [x["hub_rss_bytes"] / 1e6 for x in s["samples"] if x["hub_rss_bytes"]]
            print(f"  soak {s['secs']} s: hub RSS MB {' '.join(f'{x:.1f}' for x in rss)}; "
                  f"{s['spokes_up_at_end']} spokes up at the end; hub CPU {fmt(s['hub_cpu_s'], '{:.2f}')} s; "
                  f"IKE rx {s['counters']['ike_rx']}, NHRP rx {s['counters']['nhrp_rx']}, "
                  f"SAs lost {s['counters']['ike_down'] + s['counters']['peer_dead']}")


if __name__ == "__main__":
    main()
