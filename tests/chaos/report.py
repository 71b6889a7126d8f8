#!/usr/bin/env python3
"""Turns the output of `tests/chaos/run.sh` into the table of CHAOS.md.

    tests/chaos/run.sh --schedules 100 --seed S 2>&1 | tee chaos.out
    tests/chaos/report.py chaos.out > table.md

One row per schedule: its seed, the faults in order, what the workload did, and the
anomalies (a schedule either passes its checker, 0, or stops the run with a panic, 1).
"""
import re
import sys

FAULT = re.compile(r"^seed (\d+): (\w+) (d\d+) for ")
DONE = re.compile(
    r"^seed (\d+): (\d+) acknowledged writes intact on every node; pause days "
    r"Pauses \{ acknowledged: (\d+), indeterminate: (\d+) \}.*mail: (\d+) accepted and delivered once, (\d+) deferred"
    r".*; (\d+) connectors added and (\d+) policy versions set"
)
NODES = re.compile(r"chaos schedule seed (\d+), (\d+) nodes")


def main(path):
    faults, nodes, rows, failed = {}, {}, [], None
    for line in open(path, encoding="utf-8", errors="replace"):
        if m := NODES.search(line):
            nodes[m[1]] = m[2]
        elif m := FAULT.match(line):
            faults.setdefault(m[1], []).append(f"{m[2]} {m[3]}")
        elif m := DONE.match(line):
            seed = m[1]
            ops = (
                f"{m[2]} imports, {m[3]} pause days (+{m[4]} unknown), {m[5]} mails 250, {m[6]} deferred, "
                f"{m[7]} connectors, {m[8]} policies"
            )
            rows.append((seed, nodes.get(seed, "?"), ", ".join(faults.get(seed, [])), ops, 0))
        elif "panicked" in line and failed is None:
            failed = line.strip()
    print("| # | seed | nodes | faults | operations | anomalies |")
    print("|---|---|---|---|---|---|")
    for i, (seed, n, f, ops, anomalies) in enumerate(rows, 1):
        print(f"| {i} | {seed} | {n} | {f} | {ops} | {anomalies} |")
    if failed:
        print(f"\nThe run stopped at a failing schedule: `{failed}`")


if __name__ == "__main__":
    main(sys.argv[1])
