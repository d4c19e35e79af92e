//! How the CLI prints: text for people, or one JSON object a line with `--json`.

use crate::ClientOpts;
use plinth_client::{Client, pb};
use serde::Serialize;
use std::process::ExitCode;

pub async fn connect(opts: &ClientOpts) -> anyhow::Result<Client> {
    Ok(Client::connect(opts.endpoint.clone()).await?)
}

/// Prints a reply as one line of JSON, in the same mapping as the HTTP API.
pub fn json<T: Serialize>(message: &T) {
    println!("{}", plinth_proto::json::encode(message));
}

/// Bytes as text: UTF-8 as is, anything else escaped.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// Milliseconds since the Unix epoch as an RFC 3339 time in UTC.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

pub fn event_line(event: &pb::Event) -> String {
    let kv = event.kv.clone().unwrap_or_default();
    match pb::EventType::try_from(event.r#type) {
        Ok(pb::EventType::Delete) => format!("{} DELETE {}", kv.mod_revision, text(&kv.key)),
        _ => format!(
            "{} PUT {} {}",
            kv.mod_revision,
            text(&kv.key),
            text(&kv.value)
        ),
    }
}

pub async fn status(opts: &ClientOpts) -> anyhow::Result<ExitCode> {
    let status = connect(opts).await?.status().await?;
    if opts.json {
        json(&status);
    } else {
        let leader = if status.leader_id == 0 {
            "none".to_string()
        } else {
            status.leader_id.to_string()
        };
        println!("version:            {}", status.version);
        println!("node:               {}", status.node_id);
        println!("leader:             {leader}");
        println!("term:               {}", status.term);
        println!("revision:           {}", status.revision);
        println!("compacted revision: {}", status.compacted_revision);
        println!("last log index:     {}", status.last_log_index);
        println!("applied index:      {}", status.applied_index);
        println!("keys:               {}", status.keys);
        println!("leases:             {}", status.leases);
        println!("locks:              {}", status.locks);
        println!(
            "wal size:           {} bytes in {} segments",
            status.wal_bytes, status.wal_segments
        );
        println!("wal fsyncs:         {}", status.wal_fsyncs);
    }
    Ok(ExitCode::SUCCESS)
}
