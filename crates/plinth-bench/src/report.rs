//! What a run reports: throughput, latency percentiles, errors, and the target server's CPU
//! seconds and peak memory read from `/proc/<pid>`; as a table line and as JSON.

use crate::driver::Sample;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub workload: String,
    pub system: String,
    pub concurrency: usize,
    pub connections: usize,
    /// The load generator's runtime threads (not recorded before `--threads` existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Operations done (what an operation is depends on the workload: a put, a lock cycle, a
    /// message through a queue).
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    /// Latency of one operation.
    pub latency: Percentiles,
    /// For queues and watches: from the moment a message or value was sent to its arrival.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Percentiles>,
    /// The target server's CPU time during the run, if its pid was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// The target server's peak resident memory during the run (MiB), if its pid was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_mib: Option<f64>,
    /// Its resident memory when the run ended (MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    pub fn new(
        workload: &str,
        system: &str,
        concurrency: usize,
        connections: usize,
        sample: &Sample,
        server: Option<ServerUsage>,
    ) -> Report {
        let seconds = sample.elapsed.as_secs_f64().max(1e-9);
        Report {
            workload: workload.to_owned(),
            system: system.to_owned(),
            concurrency,
            connections,
            threads: None,
            ops: sample.ops,
            errors: sample.errors,
            seconds,
            ops_per_s: sample.ops as f64 / seconds,
            latency: Percentiles::of(&sample.latency),
            delivery: None,
            server_cpu_s: server.as_ref().map(|s| s.cpu_s),
            server_peak_rss_mib: server.as_ref().map(|s| s.peak_rss_mib),
            server_rss_mib: server.map(|s| s.rss_mib),
            first_error: sample.first_error.clone(),
        }
    }

    pub const HEADER: &'static str = "workload              system    conc      ops/s     p50 ms   p90 ms   p99 ms  p99.9 ms  errors  cpu s  rss MiB";

    pub fn line(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        format!(
            "{:<21} {:<9} {:>4} {:>10.0} {:>10.2} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>6} {:>8}",
            self.workload,
            self.system,
            self.concurrency,
            self.ops_per_s,
            ms(self.latency.p50_us),
            ms(self.latency.p90_us),
            ms(self.latency.p99_us),
            ms(self.latency.p999_us),
            self.errors,
            opt(self.server_cpu_s, 1),
            opt(self.server_peak_rss_mib, 0),
        )
    }
}

/// CPU and memory of the server under test, from `/proc/<pid>`.
#[derive(Clone, Debug)]
pub struct ServerUsage {
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
}

/// Watches a process: reset its peak-RSS mark at the start (`/proc/<pid>/clear_refs`, which
/// needs the right to write it; otherwise the peak is since the process started), then read
/// its CPU time and peak RSS at the end.
pub struct ProcWatch {
    pid: u32,
    cpu_at_start: f64,
}

impl ProcWatch {
    pub fn start(pid: u32) -> std::io::Result<ProcWatch> {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        Ok(ProcWatch {
            pid,
            cpu_at_start: cpu_seconds(pid)?,
        })
    }

    pub fn finish(&self) -> std::io::Result<ServerUsage> {
        Ok(ServerUsage {
            cpu_s: cpu_seconds(self.pid)? - self.cpu_at_start,
            peak_rss_mib: status_kib(self.pid, "VmHWM:")? as f64 / 1024.0,
            rss_mib: status_kib(self.pid, "VmRSS:")? as f64 / 1024.0,
        })
    }
}

/// User plus system CPU time of `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/stat has no ')'")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks = |i: usize| -> std::io::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/stat field {i} unreadable")))
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// A `kB` line of `/proc/<pid>/status`, such as `VmHWM:` (peak RSS) or `VmRSS:`.
pub fn status_kib(pid: u32, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/status has no {field}")))
}
