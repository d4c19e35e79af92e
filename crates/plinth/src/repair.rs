//! `plinth repair`: report what is damaged in a stopped node's log and, with `--accept-loss`,
//! cut it there so the node starts from what is intact (one node only; see docs/operations.md,
//! "A damaged log").

use crate::config::DEFAULT_DATA_DIR;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// The stopped node's data directory [default: ./plinth-data]
    #[arg(long, env = "PLINTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Cut the log at the damage, losing every entry from there on, acknowledged or not.
    /// Without it, repair only says what it would cut.
    #[arg(long)]
    accept_loss: bool,
}

pub fn main(args: RepairArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let report = plinth_node::repair(&data_dir, args.accept_loss)?;
    let span = |first: Option<u64>, last: Option<u64>| match (first, last) {
        (Some(first), Some(last)) => format!("entries {first} to {last}"),
        _ => "no entries".to_owned(),
    };
    let Some(damage) = &report.damage else {
        println!(
            "the log in {} is whole ({}); nothing to repair",
            data_dir.display(),
            span(report.first_index, report.last_intact_index)
        );
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "the log is damaged in {} at byte {}: {}",
        damage.path.display(),
        damage.offset,
        damage.reason
    );
    println!(
        "intact: {}",
        span(report.first_index, report.last_intact_index)
    );
    let acknowledged = report
        .committed_index
        .filter(|c| *c >= damage.first_lost_lsn)
        .map_or_else(
            || "none of them acknowledged".to_owned(),
            |c| {
                format!(
                    "entries {} to {c} of them acknowledged",
                    damage.first_lost_lsn
                )
            },
        );
    println!(
        "a cut loses every entry from {} on ({} bytes{}; {acknowledged})",
        damage.first_lost_lsn,
        damage.lost_bytes,
        match damage.later_segments.len() {
            0 => String::new(),
            n => format!(", {n} later segment files"),
        }
    );
    if report.cut {
        println!(
            "cut: the node starts from {}",
            report
                .last_intact_index
                .map_or("its snapshot".to_owned(), |i| format!("entry {i}"))
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("nothing was changed; run again with --accept-loss to cut the log there");
        Ok(ExitCode::FAILURE)
    }
}
