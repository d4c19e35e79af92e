//! `plinth snapshot`: back up a running cluster's whole state to a file, check a file, and
//! restore a node's data directory from one (offline, like `etcdutl snapshot restore`).

use crate::ClientOpts;
use crate::output::connect;
use anyhow::Context as _;
use plinth_node::BackupInfo;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a backup of the whole state, with every write acknowledged before the call, to FILE.
    Save { file: PathBuf },
    /// Check a backup file and say what it holds.
    Inspect { file: PathBuf },
    /// Stage a backup in a new, empty data directory; the node started there next (alone, or
    /// with --peers for a new cluster whose every voter is restored from the same file) begins
    /// from it.
    Restore {
        file: PathBuf,
        /// The data directory of the node to restore; it must be empty or not exist.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

pub async fn run(opts: &ClientOpts, command: SnapshotCommand) -> anyhow::Result<ExitCode> {
    match command {
        SnapshotCommand::Save { file } => {
            connect(opts).await?.snapshot_save(&file).await?;
            // Read back, so that a saved file is known to restore.
            let info = inspect(file.clone()).await?;
            print(opts, "saved", &file, &info);
        }
        SnapshotCommand::Inspect { file } => {
            let info = inspect(file.clone()).await?;
            print(opts, "checked", &file, &info);
        }
        SnapshotCommand::Restore { file, data_dir } => {
            let staged = data_dir.clone();
            let info =
                tokio::task::spawn_blocking(move || plinth_node::stage_restore(&file, &staged))
                    .await
                    .context("restore stopped")??;
            print(opts, "restored", &data_dir, &info);
            if !opts.json {
                println!(
                    "start the node with: plinth serve --data-dir {} (and --node-id and --peers for a cluster)",
                    data_dir.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn inspect(file: PathBuf) -> anyhow::Result<BackupInfo> {
    Ok(
        tokio::task::spawn_blocking(move || plinth_node::inspect_backup(&file))
            .await
            .context("reading the backup stopped")??,
    )
}

fn print(opts: &ClientOpts, what: &str, path: &std::path::Path, info: &BackupInfo) {
    if opts.json {
        println!(
            "{}",
            serde_json::json!({
                "path": path.display().to_string(),
                "revision": info.revision.0,
                "keys": info.keys,
                "bytes": info.bytes,
            })
        );
    } else {
        println!(
            "{what} {}: revision {}, {} keys, {} bytes",
            path.display(),
            info.revision,
            info.keys,
            info.bytes
        );
    }
}
