//! CPU time read from `/proc`, so that a work-off can be split into what this process spent and
//! what the PostgreSQL server spent on it. A rate alone does not say which side limits it; the
//! CPU each side used per job does (and `benches/peers/cpu.mjs` reads the same counters for the
//! peers). Linux only; shared by `pipeline.rs` through `#[path]`.

use std::collections::HashMap;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux architecture
/// this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds of one process, from the `stat` file of its `/proc` directory,
/// with its command name.
fn cpu_of(stat: &str) -> Option<(&str, f64)> {
    // The command name is in parentheses and may itself hold spaces or parentheses: it ends at
    // the last `)`. Fields after it start with the state (field 3); utime and stime are fields
    // 14 and 15.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) as f64 / TICKS_PER_SECOND))
}

/// CPU seconds this process has used so far.
pub fn own_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(cpu_of)
        .map_or(0.0, |(_, seconds)| seconds)
}

/// CPU seconds of each PostgreSQL server process of this host (every process named
/// `postgres`: the postmaster, its backends and its background workers) by pid, or `None` when
/// there is none (the server runs elsewhere, so its CPU cannot be read here).
pub fn postgres_seconds() -> Option<HashMap<u32, f64>> {
    let mut processes = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("postgres", seconds)) = cpu_of(&stat) {
            processes.insert(pid, seconds);
        }
    }
    (!processes.is_empty()).then_some(processes)
}

/// The CPU seconds the server's processes used between two readings: each process's growth,
/// a process that started in between counting whole. A process that exited in between is in
/// neither sum (its time in the window is lost with it, so readings are compared across a
/// window in which the measured connections stay open), so that a connection closed just
/// before the window cannot take its earlier time off the figure.
fn postgres_growth(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, seconds)| seconds - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// A reading of both counters, taken at the start of a window.
pub struct Window {
    own: f64,
    postgres: Option<HashMap<u32, f64>>,
}

impl Window {
    pub fn start() -> Window {
        Window {
            own: own_seconds(),
            postgres: postgres_seconds(),
        }
    }

    /// Microseconds of CPU per job since the start, this process's and PostgreSQL's (`None`
    /// when the server's processes are not visible here).
    pub fn per_job_us(&self, jobs: usize) -> (f64, Option<f64>) {
        let per_job = |seconds: f64| (seconds * 1e6 / jobs as f64 * 10.0).round() / 10.0;
        let own = per_job(own_seconds() - self.own);
        let postgres = self
            .postgres
            .as_ref()
            .zip(postgres_seconds())
            .map(|(before, after)| per_job(postgres_growth(before, &after)));
        (own, postgres)
    }
}
