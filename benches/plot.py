#!/usr/bin/env python3
"""Plots of the benches' JSON lines: PNGs for BENCHMARKS.md.

    python3 benches/plot.py OUT_DIR FILE...      # FILE: a bench's saved output; `-` is stdin

Reads every line of the files that is a JSON object (the benches print tables and comments
too; those are skipped) and writes, for what it finds:

- throughput_vs_inflight.png: jobs/s against jobs in flight, from `pipeline -- sweep` (and
  `peers`) lines, one curve per backend and workload, the median of the runs; peers' lines
  (graphile-worker, pg-boss) as points at their concurrency.
- exec_latency_cdf.png: latency CDFs of `execute_shell true` over MCP against bare bwrap
  spawns, from `scale -- exec` (8 concurrent callers) and `pipeline -- e2e` (one caller).
- submit_latency_cdf.png: latency CDFs of single submissions from `submit` (enqueue, and HTTP
  when the bench's own client measured it).
- scale_rss.png: the server's RSS through `scale -- idle`'s phases.

matplotlib comes from a virtual environment under target/plot-venv, made (pip, from PyPI) on
the first run when the running Python has no matplotlib.
"""

import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict

VENV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "plot-venv")


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401

        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python")
    if os.environ.get("PLOT_IN_VENV"):
        sys.exit("matplotlib is missing from %s" % VENV)
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "matplotlib"], check=True
    )
    os.environ["PLOT_IN_VENV"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def read_lines(paths):
    rows = []
    for path in paths:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8")
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def cdf(ax, quantiles, label, **style):
    ys = [p / 100 for p in range(len(quantiles))]
    ax.plot(quantiles, ys, label=label, **style)


def throughput(rows, plt, out):
    ours = [r for r in rows if r.get("system") == "daytona-mcp" and "concurrency" in r]
    sweep = [r for r in ours if r.get("setting") == "sweep"]
    ours = sweep or ours
    if not ours:
        return None
    curves = defaultdict(lambda: defaultdict(list))
    for r in ours:
        curves[(r["backend"], r["workload"])][r["concurrency"]].append(r["work_per_s"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = {"A": "no key", "B": "1,000 keys"}
    for (backend, workload), points in sorted(curves.items()):
        xs = sorted(points)
        ys = [statistics.median(points[x]) for x in xs]
        ax.plot(xs, ys, marker="o", label="%s, %s" % (backend, names.get(workload, workload)))
    peers = [r for r in rows if r.get("system") not in (None, "daytona-mcp") and r.get("ok")]
    by_peer = defaultdict(list)
    for r in peers:
        by_peer[(r["system"], r.get("workload"))].append(r)
    for (system, workload), rs in sorted(by_peer.items()):
        x = rs[0].get("concurrency") or 50
        y = statistics.median(r["work_per_s"] for r in rs)
        ax.scatter([x], [y], marker="x", s=60, label="%s, %s" % (system, names.get(workload, workload)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("jobs in flight (pool concurrency)")
    ax.set_ylabel("work-off, jobs/s")
    jobs = max(r.get("jobs", 0) for r in ours)
    ax.set_title("No-op jobs worked off vs jobs in flight (≤ %s jobs per run)" % format(jobs, ","))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out, "throughput_vs_inflight.png")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def exec_cdf(rows, plt, out):
    scale = [r for r in rows if r.get("bench") == "scale" and r.get("mode") == "exec"]
    e2e = [r for r in rows if r.get("bench") == "e2e" and r.get("path") in ("mcp", "bare_bwrap")]
    if not scale and not e2e:
        return None
    fig, ax = plt.subplots(figsize=(7, 6))
    names = {"mcp": "MCP execute_shell true", "bare_bwrap": "bare bwrap … true"}
    for r in scale:
        cdf(ax, r["quantiles_ms"], "%s, %d callers, %d sandboxes (p50 %.1f ms)"
            % (names[r["path"]], r["callers"], r["sandboxes"], r["p50_ms"]))
    for r in e2e:
        cdf(ax, r["quantiles_ms"], "%s, 1 caller (p50 %.1f ms)" % (names[r["path"]], r["p50_ms"]),
            linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms")
    ax.set_ylabel("fraction of calls")
    ax.set_title("execute_shell true over MCP vs a bare bubblewrap spawn")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    path = os.path.join(out, "exec_latency_cdf.png")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def submit_cdf(rows, plt, out):
    subs = [r for r in rows if r.get("bench") == "submit" and r.get("quantiles_ms")]
    if not subs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.6 + 0.22 * len(subs)))
    for r in subs:
        what = "Queue::enqueue" if r["mode"] == "enqueue" else "POST /v1/jobs"
        batch = "one tx each" if r["submit_batch"] == 1 else "group commit ≤%d" % r["submit_batch"]
        cdf(ax, r["quantiles_ms"], "%s, %s, %s (%.0f/s)" % (what, r["backend"], batch, r["jobs_per_s"]),
            linestyle="-" if r["submit_batch"] != 1 else ":")
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms")
    ax.set_ylabel("fraction of submissions")
    ax.set_title("Single submissions, 50 concurrent callers (HTTP: the bench's own client)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    path = os.path.join(out, "submit_latency_cdf.png")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def scale_rss(rows, plt, out):
    idle = [r for r in rows if r.get("bench") == "scale" and r.get("mode") == "idle"]
    if not idle:
        return None
    r = idle[-1]
    rss = r["rss_kib"]
    phases = [("start", "start"), ("warm", "warm-up"), ("created", "%d created" % r["sandboxes"]),
              ("idle", "touched, idle\n(%d actors)" % r["active_actors"]["idle"]),
              ("reaped", "actors reaped")]
    if "again" in rss:
        phases.append(("again", "touched again,\nidle (%d actors)" % r["active_actors"]["again"]))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([p[1] for p in phases], [rss[p[0]] / 1024 for p in phases])
    ax.set_ylabel("server RSS, MiB")
    ax.set_title("Server RSS with %d sandboxes: %.1f KiB per idle workspace"
                 % (r["sandboxes"], r["kib_per_idle_workspace"]))
    ax.grid(True, axis="y", alpha=0.3)
    path = os.path.join(out, "scale_rss.png")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rows = read_lines(sys.argv[2:])
    for plot in (throughput, exec_cdf, submit_cdf, scale_rss):
        path = plot(rows, plt, out)
        if path:
            print("wrote", path)


if __name__ == "__main__":
    main()
