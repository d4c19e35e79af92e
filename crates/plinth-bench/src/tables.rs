//! Markdown tables from the reports of one comparison: for every workload, each system's median
//! figures at each concurrency over the rounds it ran, and plinth's ratio to each peer.

use crate::report::Report;
use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median figures of one (workload, concurrency, system).
struct Row {
    runs: usize,
    errors: u64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    delivery_p50_ms: Option<f64>,
    delivery_p99_ms: Option<f64>,
    cpu_s: Option<f64>,
    rss_mib: Option<f64>,
    end_rss_mib: Option<f64>,
}

impl Row {
    fn of(reports: &[&Report]) -> Row {
        let ms = |f: &dyn Fn(&Report) -> u64| {
            median(reports.iter().map(|r| f(r) as f64 / 1000.0).collect())
        };
        let some = |f: &dyn Fn(&Report) -> Option<f64>| {
            let values: Vec<f64> = reports.iter().filter_map(|r| f(r)).collect();
            (!values.is_empty()).then(|| median(values))
        };
        Row {
            runs: reports.len(),
            errors: reports.iter().map(|r| r.errors).sum(),
            ops_per_s: median(reports.iter().map(|r| r.ops_per_s).collect()),
            p50_ms: ms(&|r| r.latency.p50_us),
            p99_ms: ms(&|r| r.latency.p99_us),
            p999_ms: ms(&|r| r.latency.p999_us),
            delivery_p50_ms: some(&|r| r.delivery.as_ref().map(|d| d.p50_us as f64 / 1000.0)),
            delivery_p99_ms: some(&|r| r.delivery.as_ref().map(|d| d.p99_us as f64 / 1000.0)),
            cpu_s: some(&|r| r.server_cpu_s),
            rss_mib: some(&|r| r.server_peak_rss_mib),
            end_rss_mib: some(&|r| r.server_rss_mib),
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

pub fn print(file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut reports = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let report: Report = serde_json::from_str(line)
            .with_context(|| format!("{} line {} is not a report", file.display(), n + 1))?;
        reports.push(report);
    }
    if reports.is_empty() {
        bail!("{} holds no reports", file.display());
    }
    print!("{}", render(&reports));
    Ok(())
}

/// The tables, workloads in the order they first appear.
pub fn render(reports: &[Report]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<(&str, usize, &str), Vec<&Report>> = BTreeMap::new();
    for r in reports {
        if !order.contains(&r.workload.as_str()) {
            order.push(&r.workload);
        }
        groups
            .entry((&r.workload, r.concurrency, &r.system))
            .or_default()
            .push(r);
    }
    let mut out = String::new();
    for workload in order {
        let delivered = reports
            .iter()
            .any(|r| r.workload == workload && r.delivery.is_some());
        out.push_str(&format!("### {workload}\n\n"));
        out.push_str("| in flight | system | ops/s | p50 ms | p99 ms | p99.9 ms |");
        if delivered {
            out.push_str(" delivery p50 ms | delivery p99 ms |");
        }
        out.push_str(
            " server CPU s | peak RSS MiB | RSS at end MiB | runs | errors |\n|---|---|---|---|---|---|",
        );
        if delivered {
            out.push_str("---|---|");
        }
        out.push_str("---|---|---|---|---|\n");
        let mut ratios = Vec::new();
        let concurrencies: Vec<usize> = {
            let mut c: Vec<usize> = groups
                .keys()
                .filter(|(w, _, _)| *w == workload)
                .map(|(_, c, _)| *c)
                .collect();
            c.dedup();
            c
        };
        for conc in concurrencies {
            let rows: Vec<(&str, Row)> = groups
                .iter()
                .filter(|((w, c, _), _)| *w == workload && *c == conc)
                .map(|((_, _, s), rs)| (*s, Row::of(rs)))
                .collect();
            for (system, row) in &rows {
                out.push_str(&format!(
                    "| {conc} | {system} | {:.0} | {:.2} | {:.2} | {:.2} |",
                    row.ops_per_s, row.p50_ms, row.p99_ms, row.p999_ms
                ));
                if delivered {
                    out.push_str(&format!(
                        " {} | {} |",
                        opt(row.delivery_p50_ms, 2),
                        opt(row.delivery_p99_ms, 2)
                    ));
                }
                out.push_str(&format!(
                    " {} | {} | {} | {} | {} |\n",
                    opt(row.cpu_s, 1),
                    opt(row.rss_mib, 0),
                    opt(row.end_rss_mib, 0),
                    row.runs,
                    row.errors
                ));
            }
            // plinth against every peer that ran this workload: the targets name a peer (etcd
            // for locks, not Redis, which is the non-durable reference).
            let plinth = rows.iter().find(|(s, _)| *s == "plinth");
            for (peer, b) in rows.iter().filter(|(s, _)| *s != "plinth") {
                let Some((_, p)) = plinth else { break };
                let ratio = |p: Option<f64>, b: Option<f64>| match (p, b) {
                    (Some(p), Some(b)) => format!("{:.2}×", p / b),
                    _ => "–".to_owned(),
                };
                ratios.push(format!(
                    "| {conc} | {peer} | {:.2}× | {:.2}× | {} | {} / {} |\n",
                    p.ops_per_s / b.ops_per_s,
                    p.p99_ms / b.p99_ms,
                    ratio(p.delivery_p99_ms, b.delivery_p99_ms),
                    ratio(p.rss_mib, b.rss_mib),
                    ratio(p.end_rss_mib, b.end_rss_mib)
                ));
            }
        }
        if !ratios.is_empty() {
            out.push_str(
                "\n| in flight | peer | plinth ops/s ÷ peer | plinth p99 ÷ peer | plinth delivery p99 ÷ peer | plinth RSS ÷ peer (peak / at end) |\n|---|---|---|---|---|---|\n",
            );
            for r in ratios {
                out.push_str(&r);
            }
        }
        out.push('\n');
    }
    out
}
