#!/usr/bin/env python3
"""Prints bench/vs-etcd.sh's table: the median over rounds of each case,
etcd beside kvstore, with the ratio of throughputs (kvstore / etcd) and each
store's largest member RSS.

    table.py RESULTS.jsonl [ETCD_VERSION]
"""
import json
import statistics
import sys
from collections import defaultdict

ORDER = ["put", "get-linearizable", "get-serializable", "txn", "watch"]


def main():
    rows = defaultdict(lambda: defaultdict(list))
    with open(sys.argv[1]) as f:
        for line in f:
            r = json.loads(line)
            rows[(r["case"], r["conc"])][r["store"]].append(r)
    version = sys.argv[2] if len(sys.argv) > 2 else "etcd"
    rounds = max(len(v) for by_store in rows.values() for v in by_store.values())
    print(f"\nmedian of {rounds} rounds; reference: {version}\n")
    print("| op | concurrency | etcd ops/s | kvstore ops/s | ratio "
          "| etcd p50 / p99 ms | kvstore p50 / p99 ms | errors etcd / kvstore "
          "| RSS MiB etcd / kvstore |")
    print("|---|---|---|---|---|---|---|---|---|")

    def key(case_conc):
        case, conc = case_conc
        return (ORDER.index(case) if case in ORDER else 99, conc)

    for case, conc in sorted(rows, key=key):
        by_store = rows[(case, conc)]
        if "etcd" not in by_store or "kvstore" not in by_store:
            continue
        med = {s: summary(by_store[s]) for s in ("etcd", "kvstore")}
        ratio = med["kvstore"]["ops"] / med["etcd"]["ops"] if med["etcd"]["ops"] else 0
        print(f"| {case} | {conc} | {med['etcd']['ops']:,.0f} | {med['kvstore']['ops']:,.0f} "
              f"| {ratio:.2f} | {med['etcd']['p50']:.2f} / {med['etcd']['p99']:.2f} "
              f"| {med['kvstore']['p50']:.2f} / {med['kvstore']['p99']:.2f} "
              f"| {med['etcd']['errors']} / {med['kvstore']['errors']} "
              f"| {med['etcd']['rss']} / {med['kvstore']['rss']} |")


def summary(runs):
    """The median of each figure over the rounds (each taken separately)."""
    return {
        "ops": statistics.median(r["ops_per_s"] for r in runs),
        "p50": statistics.median(r["latency_ms"]["p50"] for r in runs),
        "p99": statistics.median(r["latency_ms"]["p99"] for r in runs),
        # Undelivered watch events count as errors.
        "errors": sum(sum(r["errors"].values())
                      + r.get("events_expected", 0) - r.get("events_delivered", 0)
                      for r in runs),
        "rss": max(r["rss_mib"] for r in runs),
    }


if __name__ == "__main__":
    main()
