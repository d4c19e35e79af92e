//! Metrics in the Prometheus text format at `GET /metrics`.
//!
//! Two kinds, rendered together. What only the server sees as it happens is recorded in one
//! registry per server (so that several servers in one process report apart): the due delay of
//! every first claim of a run. What the replicated state already counts — runs by outcome, queue
//! depths, the log's position — is read from the state at scrape time rather than counted twice,
//! so it is the same on every replica and survives restarts.

use crate::api::Api;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;

/// Due-delay buckets in seconds: from a millisecond to ten minutes.
const DUE_DELAY_BUCKETS_S: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 60.0, 600.0,
];

pub(crate) struct Metrics {
    registry: Registry,
    due_delay: Family<Labels, Histogram>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let due_delay = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(DUE_DELAY_BUCKETS_S)
        });
        let mut registry = Registry::with_prefix("plinth");
        registry.register_with_unit(
            "schedule_due_delay",
            "Claim time minus fire time of each run's first claim, by schedule",
            Unit::Seconds,
            due_delay.clone(),
        );
        Metrics {
            registry,
            due_delay,
        }
    }

    pub(crate) fn observe_due_delay(&self, schedule: &str, delay_ms: u64) {
        self.due_delay
            .get_or_create(&vec![("schedule", schedule.to_owned())])
            .observe(delay_ms as f64 / 1000.0);
    }
}

/// A schedule's runs by outcome, and its pending and claimed runs.
struct ScheduleCounts {
    id: String,
    outcomes: [(&'static str, u64); 5],
    pending: u64,
    claimed: u64,
}

/// The counts the state holds, as read at one revision.
struct StateCounts {
    revision: u64,
    leases: u64,
    schedules: Vec<ScheduleCounts>,
    queues: Vec<(String, plinth_core::queue::QueueStats)>,
}

impl Api {
    /// Renders every metric; a read of the local state, so it answers on any replica.
    pub(crate) async fn metrics_text(&self) -> Result<String, crate::ApiError> {
        let (counts, _) = self
            .read(true, |s| StateCounts {
                revision: s.revision().0,
                leases: s.leases().len() as u64,
                schedules: s
                    .schedules()
                    .list()
                    .into_iter()
                    .map(|i| {
                        let runs = s.schedules().run_counts(&i.id);
                        let outcomes = [
                            ("completed", i.completed),
                            ("dead", i.dead),
                            ("retried", i.retried),
                            ("skipped_overlap", i.skipped_overlap),
                            ("skipped_misfire", i.skipped_misfire),
                        ];
                        ScheduleCounts {
                            id: i.id,
                            outcomes,
                            pending: runs.pending,
                            claimed: runs.claimed,
                        }
                    })
                    .collect(),
                queues: s
                    .queues()
                    .list()
                    .into_iter()
                    .map(|q| (q.name, q.stats))
                    .collect(),
            })
            .await?;
        let status = self.node.status();

        let mut scrape = Registry::with_prefix("plinth");
        let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
            let g: Gauge = Gauge::default();
            g.set(value as i64);
            registry.register(name, help, g);
        };
        gauge(
            &mut scrape,
            "revision",
            "The state's revision",
            counts.revision,
        );
        gauge(
            &mut scrape,
            "raft_term",
            "The Raft term this node is in",
            status.term,
        );
        gauge(
            &mut scrape,
            "raft_applied_index",
            "The last log index applied to the state",
            status.applied_index,
        );
        gauge(
            &mut scrape,
            "raft_is_leader",
            "1 if this node is the leader",
            u64::from(status.leader_id == Some(status.node_id)),
        );
        gauge(
            &mut scrape,
            "wal_bytes",
            "Bytes in the write-ahead log",
            status.wal_bytes,
        );
        gauge(&mut scrape, "leases", "Live leases", counts.leases);
        let fsyncs: Counter = Counter::default();
        fsyncs.inc_by(status.wal_fsyncs);
        scrape.register(
            "wal_fsyncs",
            "Data fsyncs of the write-ahead log since the node started",
            fsyncs,
        );

        let runs_total = Family::<Labels, Counter>::default();
        let runs_now = Family::<Labels, Gauge>::default();
        for ScheduleCounts {
            id,
            outcomes,
            pending,
            claimed,
        } in &counts.schedules
        {
            for (outcome, n) in outcomes {
                runs_total
                    .get_or_create(&vec![
                        ("schedule", id.clone()),
                        ("outcome", (*outcome).to_owned()),
                    ])
                    .inc_by(*n);
            }
            for (state, n) in [("pending", pending), ("claimed", claimed)] {
                runs_now
                    .get_or_create(&vec![("schedule", id.clone()), ("state", state.to_owned())])
                    .set(*n as i64);
            }
        }
        scrape.register(
            "schedule_runs",
            "Runs (or fire times skipped) by schedule and outcome",
            runs_total,
        );
        scrape.register(
            "schedule_runs_active",
            "Runs waiting to be claimed or claimed now, by schedule",
            runs_now,
        );

        let messages = Family::<Labels, Gauge>::default();
        let flows = Family::<Labels, Counter>::default();
        for (queue, stats) in &counts.queues {
            for (state, n) in [
                ("visible", stats.visible),
                ("in_flight", stats.in_flight),
                ("delayed", stats.delayed),
            ] {
                messages
                    .get_or_create(&vec![("queue", queue.clone()), ("state", state.to_owned())])
                    .set(n as i64);
            }
            for (event, n) in [
                ("sent", stats.sent),
                ("acked", stats.acked),
                ("dead_lettered", stats.dead_lettered),
            ] {
                flows
                    .get_or_create(&vec![("queue", queue.clone()), ("event", event.to_owned())])
                    .inc_by(n);
            }
        }
        scrape.register("queue_messages", "Messages by queue and state", messages);
        scrape.register(
            "queue_messages_events",
            "Messages sent, acked and dead-lettered, by queue",
            flows,
        );

        let mut text = String::new();
        encode_registry(&mut text, &self.metrics.registry)
            .and_then(|()| encode_registry(&mut text, &scrape))
            .and_then(|()| encode_eof(&mut text))
            .expect("writing to a String cannot fail");
        Ok(text)
    }
}
