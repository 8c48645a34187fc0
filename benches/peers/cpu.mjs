// CPU time read from /proc, the same counters as the project's benches/cpu.rs: a peer's
// work-off is split into what its worker processes spent and what the PostgreSQL server spent
// on it, per job. Linux only.
import { readdirSync, readFileSync } from "node:fs";

// Clock ticks per second of /proc/<pid>/stat (USER_HZ).
const TICKS_PER_SECOND = 100;

// [command name, user + system CPU seconds] of one process's stat file, or null.
function cpuOf(stat) {
  // The command name ends at the last ")"; utime and stime are fields 14 and 15.
  const open = stat.indexOf("(");
  const close = stat.lastIndexOf(")");
  if (open < 0 || close < 0) return null;
  const fields = stat.slice(close + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? [stat.slice(open + 1, close), ticks / TICKS_PER_SECOND] : null;
}

function statOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
}

// CPU seconds the process `pid` has used so far (0 once it is gone).
export function processSeconds(pid) {
  const stat = statOf(pid);
  const cpu = stat && cpuOf(stat);
  return cpu ? cpu[1] : 0;
}

// CPU seconds of each process named "postgres" on this host, by pid, or null when there is
// none (the server runs elsewhere).
export function postgresSeconds() {
  const processes = new Map();
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = statOf(pid);
    const cpu = stat && cpuOf(stat);
    if (cpu && cpu[0] === "postgres") processes.set(pid, cpu[1]);
  }
  return processes.size > 0 ? processes : null;
}

// The server's CPU seconds between two readings: each process's growth, one that started in
// between counting whole. One that exited in between is in neither sum (its time in the window
// is lost with it), so that a connection closed just before the window cannot take its earlier
// time off the figure.
function postgresGrowth(before, after) {
  let sum = 0;
  for (const [pid, seconds] of after) sum += seconds - (before.get(pid) ?? 0);
  return sum;
}

// Starts a window over the worker processes `pids` and the server; `perJobUs(jobs)` then gives
// microseconds of CPU per job of each side, rounded to 0.1 (null for the server when it is not
// visible here).
export function cpuWindow(pids) {
  const workers = () => pids.reduce((sum, pid) => sum + processSeconds(pid), 0);
  const client0 = workers();
  const pg0 = postgresSeconds();
  return {
    perJobUs(jobs) {
      const us = (seconds) => Math.round((seconds * 1e6) / jobs * 10) / 10;
      const pg1 = postgresSeconds();
      return {
        client_cpu_us_per_job: us(workers() - client0),
        postgres_cpu_us_per_job: pg0 === null || pg1 === null ? null : us(postgresGrowth(pg0, pg1)),
      };
    },
  };
}
