#!/usr/bin/env python3
"""Markdown tables of criterion medians from target/criterion/**/new/estimates.json.

Usage: criterion-table.py [CRITERION_DIR [GROUP_PREFIX ...]]; with prefixes, only the
groups whose names start with one of them. One table per benchmark group: rows are the
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


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    prefixes = tuple(sys.argv[2:])
    tables = defaultdict(lambda: defaultdict(dict))
    params_of = defaultdict(list)
    for dirpath, _, files in os.walk(root):
        if not dirpath.endswith(os.sep + "new") or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        median = est["median"]["point_estimate"]
        tp = bench.get("throughput") or {}
        per = tp.get("Elements") or tp.get("Bytes")
        group = bench["group_id"]
        if prefixes and not group.startswith(prefixes):
            continue
        if per and group.startswith("lookup"):
            median /= per
        func = bench.get("function_id") or ""
        param = bench.get("value_str") or ""
        tables[group][func][param] = median
        if param not in params_of[group]:
            params_of[group].append(param)
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
