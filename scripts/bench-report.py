#!/usr/bin/env python3
"""Writes DIR/report.md (and its SVG plots) from the outputs `scripts/bench` left in DIR.

Usage: bench-report.py DIR

Reads machine.txt, commands.txt, loadgen-<N>.json (Hearsay on real sockets),
peer-<impl>-<N>.json (chitchat, foca, memberlist), sim.json, placement.md, criterion.json
and memberlist-build.txt, whichever exist. When DIR lies under results/, it also updates
the index and the latest headline table of results/README.md and the headline table of
README.md (between the `<!-- bench:headline -->` markers). Figures are only ever copied
from those files; the quoted figures from the literature are labelled as quoted.
"""
import glob
import json
import os
import re
import sys

def _criterion_table():
    """scripts/criterion-table.py as a module (its name is not an identifier)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "criterion-table.py")
    spec = importlib.util.spec_from_file_location("criterion_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CRITERION_TABLE = _criterion_table()
IMPLS = ["hearsay", "chitchat", "foca", "memberlist"]
COLORS = {"hearsay": "#1b6ac9", "chitchat": "#d9480f", "foca": "#2b8a3e", "memberlist": "#7048e8"}
START, END = "<!-- bench:headline -->", "<!-- /bench:headline -->"

# Published figures, quoted (never measured here); each with its source.
QUOTED = [
    ("memberlist", "cold start, 2000 members on 100 VMs", "up to 95 s to bootstrap",
     "Suresh et al., *Stable and Consistent Membership at Scale with Rapid*, USENIX ATC 2018"),
    ("Serf (memberlist)", "one broadcast, 10 000 members, defaults (200 ms gossip interval, fanout 3)",
     "99.99% of members reached in about 2.6 s (model)",
     "Serf convergence simulator, serf.io/docs/internals/simulator.html"),
    ("memberlist with Lifeguard", "false positives under slow message processing",
     "false-positive rate reduced by a factor of more than 50",
     "Dadgar, Phillips, Currey, *Lifeguard: Local Health Awareness for More Accurate "
     "Failure Detection*, arXiv:1707.00788"),
    ("jump consistent hash", "standard error of bucket sizes, 1000 buckets",
     "7.64e-9 (ring with 1000 points per bucket: 3.16e-2)",
     "Lamping, Veach, *A Fast, Minimal Memory, Consistent Hash Algorithm*, 2014, table 1 "
     "(reproduced in the placement section below)"),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def kv(path):
    out = {}
    for line in read(path).splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def step(run, name):
    for s in run.get("steps", []):
        if s.get("step") == name:
            return s
    return None


def hearsay_row(run):
    """Our loadgen record in the peers' shape."""
    cold, steady, kill = step(run, "cold-start"), step(run, "steady"), step(run, "kill")

    def conv(s):
        if not s or not s.get("convergence"):
            return None
        c = s["convergence"]
        return {
            "converged": c.get("converged"),
            "of": c.get("nodes"),
            "first_ms": c.get("first_ms"),
            "p50_ms": c.get("p50_ms"),
            "p99_ms": c.get("p99_ms"),
            "last_ms": c.get("last_ms") if c.get("converged") == c.get("nodes") else None,
            "bound_ms": s.get("bound_ms"),
        }

    def usage(s, key):
        return (s or {}).get("usage", {}).get(key)

    return {
        "impl": "hearsay",
        "version": run.get("machine", "").split("hearsay ")[-1].rstrip(".") or "",
        "settings": f"preset {run.get('preset')} (probe period {run.get('period_ms')} ms), "
        f"{run.get('backend')} backend, {run.get('shards')} shards",
        "nodes": run.get("nodes"),
        "cold_start": conv(cold),
        "detect": conv(kill),
        "false_suspicions": sum((s or {}).get("false_suspicions", 0) for s in (cold, steady, kill)),
        "false_declarations": sum((s or {}).get("false_declarations", 0) for s in (cold, steady, kill)),
        "bytes_per_node_s": {
            "cold_start": usage(cold, "bytes_per_node_s"),
            "steady": usage(steady, "bytes_per_node_s"),
            "detect": usage(kill, "bytes_per_node_s"),
        },
        "cpu_s": run.get("cpu_s"),
        "wall_s": run.get("wall_s"),
        "peak_rss_mib": run.get("peak_rss_mib"),
        "error": None,
    }


def ms(v):
    if v is None:
        return "–"
    return f"{v / 1000:.1f} s" if v >= 10_000 else f"{v:.0f} ms"


def num(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}".replace(",", " ")


def converged_cell(c, limit_s=None):
    if not c:
        return "–"
    got, of = c.get("converged"), c.get("of")
    if got is None or of is None:
        return "–"
    if got == of:
        return f"all {of}: p50 {ms(c.get('p50_ms'))}, last {ms(c.get('last_ms'))}"
    limit = c.get("limit_s") or limit_s
    within = f" in {limit:.0f} s" if limit else ""
    return f"**{got}/{of}**{within}" + (f"; p50 {ms(c.get('p50_ms'))}" if got else "")


def collect(d):
    rows = []
    for path in sorted(glob.glob(os.path.join(d, "loadgen-*.json"))):
        run = load(path)
        if run and "steps" in run:
            rows.append(hearsay_row(run))
    for path in sorted(glob.glob(os.path.join(d, "peer-*.json"))):
        r = load(path)
        if r:
            rows.append(r)
        else:
            m = re.match(r"peer-(\w+)-(\d+)\.json", os.path.basename(path))
            if m:
                rows.append({"impl": m.group(1), "nodes": int(m.group(2)),
                             "error": "its JSON could not be read"})
    rows.sort(key=lambda r: (r.get("nodes") or 0, IMPLS.index(r["impl"]) if r["impl"] in IMPLS else 9))
    return rows


def headline(rows, link=""):
    out = [
        "| N | implementation | cold start through one seed (all see all alive) | 1% crash known dead by every survivor | B/node/s, cold start | B/node/s, steady | CPU s | peak RSS |",
        "|--:|---|---|---|--:|--:|--:|--:|",
    ]
    for r in rows:
        if r.get("error") and not r.get("cold_start"):
            out.append(f"| {r.get('nodes')} | {r['impl']} | failed: {r['error']} | | | | | |")
            continue
        b = r.get("bytes_per_node_s") or {}
        out.append(
            f"| {r.get('nodes')} | {r['impl']} | {converged_cell(r.get('cold_start'))} | "
            f"{converged_cell(r.get('detect'))} | {num(b.get('cold_start'))} | {num(b.get('steady'))} | "
            f"{num(r.get('cpu_s'), 1)} | {num(r.get('peak_rss_mib'))} MiB |"
        )
    return "\n".join(out)


def svg_chart(path, title, ylabel, series, note=""):
    """A log-log line chart: series is {name: [(n, value or None)]}; None is left out."""
    import math

    pts = [(x, y) for s in series.values() for x, y in s if y is not None and y > 0]
    if not pts:
        return False
    w, h, left, right, top, bottom = 640, 400, 70, 150, 40, 50
    xs = sorted({x for x, _ in pts})
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0 = math.floor(math.log10(min(y for _, y in pts)))
    y1 = math.ceil(math.log10(max(y for _, y in pts)))
    if y1 == y0:
        y1 += 1

    def px(x):
        return left + (math.log10(x) - x0) / (x1 - x0) * (w - left - right)

    def py(y):
        return h - bottom - (math.log10(y) - y0) / (y1 - y0) * (h - top - bottom)

    e = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
         f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle">{ylabel}</text>',
         f'<text x="{(w - right + left) / 2}" y="{h - 12}" text-anchor="middle">nodes (log scale){note}</text>']
    for k in range(y0, y1 + 1):
        y = py(10 ** k)
        e.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#ddd"/>')
        e.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** k:g}</text>')
    for x in xs:
        e.append(f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{h - bottom}" stroke="#eee"/>')
        e.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x}</text>')
    for i, (name, s) in enumerate(series.items()):
        color = COLORS.get(name, "#555")
        good = [(px(x), py(y)) for x, y in s if y is not None and y > 0]
        if len(good) > 1:
            e.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                     % (color, " ".join(f"{a:.1f},{b:.1f}" for a, b in good)))
        for a, b in good:
            e.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{color}"/>')
        ly = top + 10 + 18 * i
        e.append(f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 32}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        e.append(f'<text x="{w - right + 38}" y="{ly + 4}">{name}</text>')
    e.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(e) + "\n")
    return True


def plots(d, rows):
    made = []

    def series(get):
        out = {}
        for r in rows:
            out.setdefault(r["impl"], []).append((r.get("nodes"), get(r)))
        return {k: sorted(v) for k, v in out.items() if any(y for _, y in v)}

    def last_s(key):
        def get(r):
            c = r.get(key) or {}
            v = c.get("last_ms")
            return v / 1000 if v is not None and c.get("converged") == c.get("of") else None
        return get

    left_out = "; runs that did not converge are left out"
    specs = [
        ("cold-start.svg", "Cold start: last node to see all alive", "seconds",
         last_s("cold_start"), left_out),
        ("detect.svg", "1% crash: last survivor to know all dead", "seconds", last_s("detect"), left_out),
        ("steady-bytes.svg", "Steady state: bytes sent per node per second", "B/node/s",
         lambda r: (r.get("bytes_per_node_s") or {}).get("steady"), ""),
        ("cpu.svg", "CPU seconds of the whole run (one process)", "CPU seconds",
         lambda r: r.get("cpu_s"), ""),
    ]
    for name, title, ylabel, get, note in specs:
        if svg_chart(os.path.join(d, name), title, ylabel, series(get), note=note):
            made.append((name, title))
    return made


def criterion_tables(records, prefixes, per_element=False):
    from collections import defaultdict

    fmt = CRITERION_TABLE.fmt_ns
    tables = defaultdict(lambda: defaultdict(dict))
    params = defaultdict(list)
    for r in records:
        g = r["group"]
        if not g.startswith(prefixes):
            continue
        v = r["median_ns"]
        el = r.get("elements")
        cell = fmt(v / el) if per_element and el else fmt(v)
        if el and not per_element:
            cell += f" ({el * 1e9 / v / 1000:,.0f} k/s)".replace(",", " ")
        tables[g][r["function"]][r["parameter"]] = cell
        if r["parameter"] not in params[g]:
            params[g].append(r["parameter"])
    out = []
    for g in sorted(tables):
        ps = params[g]
        out.append(f"**{g}**\n")
        out.append("| | " + " | ".join(ps) + " |")
        out.append("|---|" + "--:|" * len(ps))
        for func in sorted(tables[g]):
            out.append(f"| {func} | " + " | ".join(tables[g][func].get(p, "") for p in ps) + " |")
        out.append("")
    return "\n".join(out)


def sim_table(sim):
    if not sim or not sim.get("runs"):
        return "No simulator run in this folder.\n"
    out = ["| N | cold start, periods | cold start KiB/node | new member reaches all, periods | failure known by all, periods (bound) | steady B/node/s | simulator wall time |",
           "|--:|--:|--:|--:|--:|--:|--:|"]
    for r in sim["runs"]:
        out.append(
            f"| {r['nodes']} | {r['cold_start_periods']:.1f} | {r['cold_start_kib_per_node']:.0f} | "
            f"{r['join_spread_periods']:.2f} | {r['failure_detect_periods']:.1f} ({r['failure_detect_bound_periods']:.0f}) | "
            f"{r['steady_bytes_per_node_per_sec']:.0f} | {r['wall_seconds']:.0f} s |")
    return "\n".join(out) + "\n"


def update_between(path, block):
    text = read(path)
    if not text or START not in text or END not in text:
        return False
    a, b = text.index(START) + len(START), text.index(END)
    with open(path, "w") as f:
        f.write(text[:a] + "\n" + block + "\n" + text[b:])
    return True


def publish(d, m, rows):
    """Index row and headline tables, for a folder under results/."""
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    results = os.path.join(repo, "results")
    d = os.path.abspath(d)
    if os.path.dirname(d) != results:
        return
    name = os.path.basename(d)
    block = (f"From [`results/{name}`](results/{name}/report.md) ({m.get('mode', '?')} run of "
             f"`scripts/bench`, commit `{m.get('commit', '?')}`, {m.get('cores', '?')} cores):\n\n"
             + headline(rows))
    update_between(os.path.join(repo, "README.md"), block)
    readme = os.path.join(results, "README.md")
    update_between(readme, block.replace("(results/", "("))
    text = read(readme)
    row = (f"| [{name}]({name}/report.md) | the whole suite ({m.get('mode', '?')}): criterion benches, "
           f"loadgen at N = {m.get('nodes', '?')} beside chitchat, foca and memberlist, simulator at "
           f"{m.get('sim_nodes', '?')} | `scripts/bench{' --quick' if m.get('mode') == 'quick' else ''}` |")
    if text and f"[{name}]" not in text:
        marker = "|---|---|---|\n"
        if marker in text:
            text = text.replace(marker, marker + row + "\n", 1)
            with open(readme, "w") as f:
                f.write(text)


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: bench-report.py DIR (a folder written by scripts/bench)")
    d = sys.argv[1]
    m = kv(os.path.join(d, "machine.txt"))
    rows = collect(d)
    made = plots(d, rows)
    crit = load(os.path.join(d, "criterion.json")) or []
    sim = load(os.path.join(d, "sim.json"))
    r = []
    r.append(f"# Benchmarks, {m.get('date', '?')[:10]}, {m.get('host', '?')} ({m.get('mode', '?')} run)\n")
    r.append(f"Produced by `scripts/bench{' --quick' if m.get('mode') == 'quick' else ''}` at commit "
             f"`{m.get('commit', '?')}`; every command it ran is listed at the end, with its output "
             f"file beside this report. Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
             f"{m.get('memory_gib', '?')} GiB, Linux {m.get('kernel', '?')}, {m.get('rustc', '?')}.\n")
    if m.get("mode") == "quick":
        r.append("This is a **quick** run: short criterion measurements, small N, builds without "
                 "fat LTO. It shows the shape of a full run; its figures are not for publication.\n")
    r.append("## Membership: Hearsay beside chitchat, foca and memberlist\n")
    r.append("The same script for every implementation, each in its own process on this machine's "
             "loopback: node 0 starts alone, the other N−1 start at random times over one protocol "
             "period and join through node 0 only; then 5 s (5 periods) of steady state; then 1% of "
             "the nodes (at least one, never the seed) crash at once, without leaving. Convergence "
             "is read from each node's own view: a node has converged in the cold start when it "
             "sees all N alive, and in the crash when none of the crashed nodes is alive in its "
             "view. The peers' views are sampled every 100 ms; Hearsay's shards record the moment "
             "exactly. Bytes are what the nodes sent (payload), per node per second of the step. CPU "
             "and peak RSS are the whole process. A run gives up after the same limit for all.\n")
    r.append(headline(rows) + "\n")
    errors = [x for x in rows if x.get("error")]
    for x in errors:
        r.append(f"- {x['impl']} at {x.get('nodes')}: {x['error']}")
    if errors:
        r.append("")
    extra = [x for x in rows if x["impl"] == "hearsay"]
    if extra:
        r.append("Hearsay's false suspicions / false declarations over the three steps: "
                 + "; ".join(f"N = {x['nodes']}: {num(x['false_suspicions'])} / "
                             f"{num(x['false_declarations'])}" for x in extra)
                 + ". Its runs' own reports (`loadgen-N.md`) have the per-step detail and the "
                 "messages per type.\n")
    build = read(os.path.join(d, "memberlist-build.txt")).strip()
    if not glob.glob(os.path.join(d, "peer-memberlist-*.json")) and "memberlist" in m.get("peers", ""):
        r.append(f"memberlist was not measured: its harness could not be built here "
                 f"(`loadgen/peers/memberlist/build`: {build.splitlines()[-1] if build else 'no output'}).\n")
    for name, title in made:
        r.append(f"![{title}]({name})\n")
    r.append("### Settings\n")
    seen = set()
    for x in rows:
        if x["impl"] in seen or not x.get("settings"):
            continue
        seen.add(x["impl"])
        r.append(f"- **{x['impl']}** {x.get('version', '')}: {x['settings']}")
    r.append("")
    r.append("### Published figures (quoted, not measured here)\n")
    r.append("| system | what | figure | source |")
    r.append("|---|---|---|---|")
    for q in QUOTED:
        r.append("| " + " | ".join(q) + " |")
    r.append("")
    r.append(f"## Simulator (`loadgen sim`, exact and seeded)\n")
    r.append(sim_table(sim))
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    placement = (read(os.path.join(d, "placement.md"))
                 .replace(os.path.abspath(d) + "/", "").replace(repo + "/", ""))
    if placement:
        r.append("## Placement: hot-spot spread and keys moved (`loadgen placement`)\n")
        r.append(re.sub(r"^#+ .*\n", "", placement, count=1).replace("\n## ", "\n### "))
    if crit:
        r.append("## Criterion benches (medians; throughput where the bench sets one)\n")
        r.append("### Placement lookups, per lookup, with the peer crates\n")
        r.append(criterion_tables(crit, ("lookup",), per_element=True))
        r.append("### Placement builds\n")
        r.append(criterion_tables(crit, ("build",)))
        r.append("### Codec\n")
        r.append(criterion_tables(crit, ("encode", "decode")))
        r.append("### A node's receive path (a frame of member updates it holds already or new "
                 "to it, a digest of members it holds) and its answer to a joiner's first pull\n")
        r.append(criterion_tables(crit, ("receive", "answer")))
        r.append("### CRDT merges\n")
        r.append(criterion_tables(crit, ("merge", "apply")))
        r.append("### The example router's decision beside a bare UDP forward\n")
        r.append(criterion_tables(crit, ("router",)))
        r.append("### Transport (datagrams per iteration: 1024)\n")
        r.append(criterion_tables(crit, ("one-flow", "many-sockets")))
        lat = [l for l in read(os.path.join(d, "criterion-transport.txt")).splitlines() if l.startswith("latency/")]
        if lat:
            r.append("One-way latency at a quarter of each transport's one-flow peak:\n")
            r.append("```\n" + "\n".join(lat) + "\n```\n")
    r.append("## Commands\n")
    commands = read(os.path.join(d, "commands.txt")).replace("+ ", "")
    r.append("```sh\n" + commands.replace(os.path.abspath(d) + "/", "") + "```\n")
    with open(os.path.join(d, "report.md"), "w") as f:
        f.write("\n".join(r))
    publish(d, m, rows)
    print(f"wrote {os.path.join(d, 'report.md')}")


if __name__ == "__main__":
    main()
