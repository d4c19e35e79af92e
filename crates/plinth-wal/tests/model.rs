//! Random operation sequences against a plain in-memory model of the log, with reopens in between.

mod common;

use common::payload;
use plinth_wal::{Lsn, Wal, WalOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Records of these payload sizes, continuing the log.
    Append(Vec<usize>),
    /// Truncate from `last_lsn - back`.
    TruncateBack(u64),
    /// Purge up to `first_lsn + ahead`.
    PurgeAhead(u64),
    Reopen,
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(0usize..120, 1..8).prop_map(Op::Append),
        1 => (0u64..12).prop_map(Op::TruncateBack),
        1 => (0u64..20).prop_map(Op::PurgeAhead),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
    ]
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 300,
        sync: false,
        ..WalOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_log_matches_a_model_through_any_sequence_of_operations(
        start in 1u64..1000,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), options()).expect("open");
        let mut model: Vec<(Lsn, Vec<u8>)> = Vec::new();
        let mut salt = 0u8;

        for op in ops {
            salt = salt.wrapping_add(1);
            match op {
                Op::Append(sizes) => {
                    let first = model.last().map_or(start, |(lsn, _)| lsn + 1);
                    let batch: Vec<(Lsn, Vec<u8>)> = sizes
                        .iter()
                        .enumerate()
                        .map(|(i, &len)| (first + i as u64, payload(first + i as u64, salt, len)))
                        .collect();
                    let refs: Vec<(Lsn, &[u8])> =
                        batch.iter().map(|(lsn, bytes)| (*lsn, bytes.as_slice())).collect();
                    wal.append(&refs).expect("append");
                    model.extend(batch);
                }
                Op::TruncateBack(back) => {
                    if let Some(&(last, _)) = model.last() {
                        let from = last.saturating_sub(back);
                        wal.truncate_from(from).expect("truncate");
                        model.retain(|(lsn, _)| *lsn < from);
                    }
                }
                Op::PurgeAhead(ahead) => {
                    if let Some(&(first, _)) = model.first() {
                        let upto = first + ahead;
                        wal.purge_upto(upto).expect("purge");
                        let new_first = wal.first_lsn().expect("purge keeps the active segment");
                        prop_assert!(new_first <= upto + 1 || new_first == first);
                        model.retain(|(lsn, _)| *lsn >= new_first);
                    }
                }
                Op::Reopen => {
                    drop(wal);
                    wal = Wal::open(dir.path(), options()).expect("reopen");
                }
                Op::Sync => wal.sync().expect("sync"),
            }
            prop_assert_eq!(wal.first_lsn(), model.first().map(|(lsn, _)| *lsn));
            prop_assert_eq!(wal.last_lsn(), model.last().map(|(lsn, _)| *lsn));
            let read = wal.read(0, Lsn::MAX).expect("read");
            prop_assert_eq!(&read, &model);
            let on_disk: u64 = model.iter().map(|(_, bytes)| 16 + bytes.len() as u64).sum();
            prop_assert_eq!(wal.size_bytes(), on_disk);
        }
    }
}
