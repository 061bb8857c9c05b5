#!/usr/bin/env python3
"""Markdown tables of criterion medians from target/criterion/**/new/estimates.json.

Usage: criterion-table.py [--json] [CRITERION_DIR [GROUP_PREFIX ...]]; with prefixes, only
the groups whose names start with one of them. With --json it prints one record per
benchmark instead (group, function, parameter, median and its confidence bounds in ns per
iteration, and the throughput per iteration criterion was given), for scripts/bench-report.py. One table per benchmark group: rows are the
benchmark functions (schemes and peers), columns the parameters (N). With a throughput of
elements set on a `lookup/...` group, the cell is the median time per element (per lookup);
everywhere else it is the median time per iteration (e.g. one whole build).
"""
import json
import os
import sys
from collections import defaultdict


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def records(root, prefixes):
    """Every benchmark under `root` whose group starts with one of `prefixes` (or all)."""
    out = []
    for dirpath, _, files in os.walk(root):
        if not dirpath.endswith(os.sep + "new") or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        if prefixes and not bench["group_id"].startswith(prefixes):
            continue
        median = est["median"]
        tp = bench.get("throughput") or {}
        out.append(
            {
                "group": bench["group_id"],
                "function": bench.get("function_id") or "",
                "parameter": bench.get("value_str") or "",
                "median_ns": median["point_estimate"],
                "low_ns": median["confidence_interval"]["lower_bound"],
                "high_ns": median["confidence_interval"]["upper_bound"],
                "elements": tp.get("Elements"),
                "bytes": tp.get("Bytes"),
            }
        )
    out.sort(key=lambda r: (r["group"], r["function"], len(r["parameter"]), r["parameter"]))
    return out


def main():
    args = sys.argv[1:]
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    root = args[0] if args else "target/criterion"
    prefixes = tuple(args[1:])
    if as_json:
        json.dump(records(root, prefixes), sys.stdout, indent=1)
        print()
        return
    tables = defaultdict(lambda: defaultdict(dict))
    params_of = defaultdict(list)
    for r in records(root, prefixes):
        group, median = r["group"], r["median_ns"]
        per = r["elements"] or r["bytes"]
        if per and group.startswith("lookup"):
            median /= per
        tables[group][r["function"]][r["parameter"]] = median
        if r["parameter"] not in params_of[group]:
            params_of[group].append(r["parameter"])
    for group in sorted(tables):
        params = sorted(params_of[group], key=lambda p: (len(p), p))
        print(f"### {group}\n")
        print("| | " + " | ".join(f"N = {p}" if p else "" for p in params) + " |")
        print("|---|" + "--:|" * len(params))
        for func in sorted(tables[group]):
            row = tables[group][func]
            cells = [fmt_ns(row[p]) if p in row else "" for p in params]
            print(f"| {func} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
