//! Crash test: concurrent SDK writers while the server is `kill -9`ed and restarted several
//! times; every acknowledged put must survive, with revisions dense and increasing.

mod common;

use common::{Server, retry};
use plinth_client::Client;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WRITERS: usize = 8;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_put_survives_kill_9() {
    let mut server = Server::start();
    let client = Client::connect_lazy(server.endpoint()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            // key → revision of every put the server acknowledged.
            let mut acked = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("crash/{w}/{n:06}");
                match client.put(key.clone(), n.to_string()).await {
                    Ok(reply) => {
                        acked.insert(key, reply.header.unwrap().revision);
                    }
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
                n += 1;
            }
            acked
        }));
    }
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.restart();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for writer in writers {
        let mine = writer.await.unwrap();
        let revisions: Vec<u64> = mine.values().copied().collect();
        // A writer's puts are sequential: their revisions strictly increase in key order.
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "revisions of one writer out of order"
        );
        acked.extend(mine);
    }
    assert!(
        acked.len() > 50,
        "too few acknowledged writes to mean anything: {}",
        acked.len()
    );

    let mut all = BTreeMap::new();
    let mut from = b"crash/".to_vec();
    loop {
        let page = retry(|| {
            client.range(plinth_client::pb::RangeRequest {
                key: from.clone(),
                range_end: b"crash0".to_vec(),
                ..Default::default()
            })
        })
        .await;
        for kv in &page.kvs {
            all.insert(String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision);
        }
        if !page.more {
            break;
        }
        from = page.kvs.last().unwrap().key.clone();
        from.push(0);
    }
    for (key, revision) in &acked {
        assert_eq!(
            all.get(key),
            Some(revision),
            "acknowledged put of {key} at revision {revision} was lost"
        );
    }
    // Every put is its own revision and nothing else takes one here: the revisions of all keys
    // present are exactly 1..=N.
    let mut revisions: Vec<u64> = all.values().copied().collect();
    revisions.sort();
    let dense: Vec<u64> = (1..=revisions.len() as u64).collect();
    assert_eq!(revisions, dense, "revisions are not dense");
    println!(
        "{} puts acknowledged, {} present after {KILLS} kill -9s",
        acked.len(),
        all.len()
    );
}
