"""Reads the JSON lines of compare.sh on stdin; prints a Markdown table per workload: the median
work-off rate of each system and setting, its ratio to the best peer of the same run, and the
median CPU each side spent per job during the work-off (the system's own processes, and the
PostgreSQL server's when it runs on this host)."""
import json
import statistics
import sys

rows = {}
cpu = {}
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r["system"] == "daytona-mcp":
        name = f"daytona-mcp {r['backend']}, {r['setting']} in flight"
        if r["setting"] == "tuned":
            name += f" ({r['concurrency']}, claims of {r['claim_batch']})"
    elif r["system"] == "graphile-worker":
        name = f"graphile-worker {r['version']} ({r['profile']}, concurrency {r['concurrency']})"
    else:
        name = f"pg-boss {r['version']} (batchSize {r['batch_size']} x {r['local_concurrency']})"
    rate = r.get("work_per_s")
    if rate is not None:
        rows.setdefault(r["workload"], {}).setdefault(name, []).append(rate)
        for side in ("client", "postgres"):
            us = r.get(f"{side}_cpu_us_per_job")
            if us is not None:
                cpu.setdefault((r["workload"], name, side), []).append(us)

titles = {"A": "A: 20,000 no-op jobs, no key", "B": "B: 20,000 no-op jobs, 1,000 keys round-robin"}
for workload in sorted(rows):
    systems = {n: statistics.median(v) for n, v in rows[workload].items()}
    peers = {n: v for n, v in systems.items() if not n.startswith("daytona-mcp")}
    best = max(peers.values()) if peers else None
    print(f"\n### {titles.get(workload, workload)}\n")
    print(
        "| system | work-off jobs/s (median) | runs | vs best peer "
        "| client CPU µs/job | PostgreSQL CPU µs/job |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, rate in sorted(systems.items(), key=lambda kv: -kv[1]):
        ratio = f"{rate / best:.2f}x" if best else "-"
        all_runs = ", ".join(f"{v:.0f}" for v in rows[workload][name])
        sides = []
        for side in ("client", "postgres"):
            values = cpu.get((workload, name, side))
            sides.append(f"{statistics.median(values):.1f}" if values else "-")
        print(f"| {name} | {rate:,.0f} | {all_runs} | {ratio} | {sides[0]} | {sides[1]} |")
