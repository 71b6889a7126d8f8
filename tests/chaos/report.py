#!/usr/bin/env python3
"""Turns the output of `tests/chaos/run.sh` into the tables of CHAOS.md.

    tests/chaos/run.sh --schedules 100 --seed S 2>&1 | tee chaos.out
    tests/chaos/report.py chaos.out > tables.md

First the totals of the run (faults by kind, what the workload did), then one row per
schedule: its seed, its faults counted by kind, what the workload did, and the anomalies
(a schedule either passes its checker, 0, or stops the run with a panic, 1).
"""
import re
import sys
from collections import Counter

SCHEDULE = re.compile(r"chaos schedule seed (\d+), (\d+) nodes")
FAULT = re.compile(r"^seed (\d+): (\w+) (d\d+) for ")
LEADER_CRASH = re.compile(r"^  d\d+ \(leader\) killed and restarted")
DISK_STOP = re.compile(r"^d\d+ stopped on the full disk")
DONE = re.compile(
    r"^seed (\d+): (\d+) acknowledged writes intact on every node; pause days "
    r"Pauses \{ acknowledged: (\d+), indeterminate: (\d+), refunded: (\d+), refunded_at_most: (\d+) \}"
    r".*mail: (\d+) accepted and delivered once, (\d+) deferred"
    r".*; (\d+) connectors added and (\d+) policy versions set"
)
WORK = ["imports", "pause days", "unknown", "refunded", "refunds unknown", "mails 250", "deferred", "connectors", "policies"]


def parse(path):
    schedules, current, failed = [], None, None
    for line in open(path, encoding="utf-8", errors="replace"):
        if m := SCHEDULE.search(line):
            current = {"seed": m[1], "nodes": m[2], "faults": Counter(), "leader_crashes": 0, "disk_stops": 0}
            schedules.append(current)
        elif current is None:
            continue
        elif m := FAULT.match(line):
            current["faults"][m[2]] += 1
        elif LEADER_CRASH.match(line):
            current["leader_crashes"] += 1
        elif DISK_STOP.match(line):
            current["disk_stops"] += 1
        elif m := DONE.match(line):
            current["work"] = dict(zip(WORK, map(int, m.groups()[1:])))
        elif "panicked" in line and failed is None:
            failed = (current["seed"], line.strip())
    return schedules, failed


def counted(counter):
    return ", ".join(f"{kind} {n}" for kind, n in counter.most_common())


def main(path):
    schedules, failed = parse(path)
    passed = [s for s in schedules if "work" in s]
    faults = sum((s["faults"] for s in schedules), Counter())
    work = Counter()
    for s in passed:
        work.update(s["work"])
    print(f"{len(passed)} of {len(schedules)} schedules passed their checker.\n")
    print("| | total |\n|---|---|")
    print(f"| faults | {sum(faults.values())}: {counted(faults)} |")
    print(f"| leader crashes during a member's catch-up or promotion | {sum(s['leader_crashes'] for s in schedules)} |")
    print(f"| full disks that stopped a decider (restarted) | {sum(s['disk_stops'] for s in schedules)} |")
    print(f"| acknowledged imports | {work['imports']:,}, every one on every node with its first-seen instant |")
    print(
        f"| pause days | {work['pause days']:,} acknowledged, {work['unknown']:,} indeterminate, "
        f"{work['refunded']:,} refunded by acknowledged ends ({work['refunds unknown']} more by ends of unknown outcome) |"
    )
    print(
        f"| mail | {work['mails 250']:,} messages got 250, each in the sink exactly once and counted once; "
        f"{work['deferred']:,} deferred (4xx) |"
    )
    print(f"| admin changes | {work['connectors']:,} connectors added, {work['policies']:,} policy versions set |\n")
    print("| # | seed | nodes | faults | operations | anomalies |")
    print("|---|---|---|---|---|---|")
    for i, s in enumerate(schedules, 1):
        if "work" in s:
            w = s["work"]
            ops = (
                f"{w['imports']} imports, {w['pause days']} pause days (+{w['unknown']} unknown, "
                f"-{w['refunded']} refunded), {w['mails 250']} mails 250, {w['deferred']} deferred, "
                f"{w['connectors']} connectors, {w['policies']} policies"
            )
            anomalies = 0
        else:
            ops, anomalies = "stopped by its checker", 1
        print(f"| {i} | {s['seed']} | {s['nodes']} | {counted(s['faults'])} | {ops} | {anomalies} |")
    if failed:
        print(f"\nThe run stopped at seed {failed[0]}: `{failed[1]}`")


if __name__ == "__main__":
    main(sys.argv[1])
