//! End-to-end tests of the service registry against the real binary: fifty instances of which
//! ten stop heartbeating, the resolver's picks, replaced and re-registered instances, bad input
//! and the CLI.

mod common;

use common::{Lines, Server, eventually};
use plinth_client::{Client, Code, Pick, RegisterOptions, pb};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);

fn ids(instances: &[pb::RegistryInstance]) -> BTreeSet<String> {
    instances.iter().map(|i| i.instance.clone()).collect()
}

/// Fifty instances register with a 2 s ttl; ten stop heartbeating (as a crashed process
/// would). They vanish from Resolve and from a resolver's watched list within the ttl plus a
/// tick; the forty others stay, through several ttls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_that_stop_heartbeating_vanish_within_ttl_and_a_tick_and_the_rest_stay() {
    let server = Server::start();
    let client = Client::connect(server.endpoint()).await.unwrap();
    let mut resolver = client.resolver("api").await.unwrap();
    let mut registrations = Vec::new();
    for i in 0..50 {
        let options = RegisterOptions::new("api", format!("i{i:02}"), format!("10.0.0.{i}:80"))
            .ttl(TTL)
            .meta("zone", if i % 2 == 0 { "a" } else { "b" });
        registrations.push(client.register(options).await.unwrap());
    }
    let all: BTreeSet<String> = (0..50).map(|i| format!("i{i:02}")).collect();
    eventually(
        Duration::from_secs(5),
        "the resolver to see all 50",
        || async { ids(&resolver.instances()) == all },
    )
    .await;
    assert_eq!(
        ids(&client.registry_resolve("api", false).await.unwrap()),
        all
    );

    // Ten stop heartbeating. The last heartbeat of each was at most a third of the ttl ago.
    let stopped = Instant::now();
    let dead: BTreeSet<String> = (40..50).map(|i| format!("i{i:02}")).collect();
    for registration in registrations.drain(40..) {
        registration.abandon();
    }
    let alive: BTreeSet<String> = all.difference(&dead).cloned().collect();
    // The ticker proposes a tick when a lease is due; allow a tick and a generous margin for a
    // shared machine (a heartbeat already on its way when its task was aborted counts too).
    let bound = TTL + Duration::from_secs(4);
    loop {
        let resolved = ids(&client.registry_resolve("api", false).await.unwrap());
        let watched = ids(&resolver.instances());
        if resolved == alive && watched == alive {
            break;
        }
        assert!(
            resolved.is_superset(&alive) && watched.is_superset(&alive),
            "a heartbeating instance vanished"
        );
        assert!(
            stopped.elapsed() < bound,
            "still listed {:?} after the ttl and a tick: resolve {resolved:?}, resolver {watched:?}",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let vanished = stopped.elapsed();
    println!(
        "10 abandoned instances vanished {vanished:?} after their last heartbeat at the latest (ttl {TTL:?})"
    );

    // The forty others stay, through three ttls.
    tokio::time::sleep(TTL * 3).await;
    assert_eq!(
        ids(&client.registry_resolve("api", false).await.unwrap()),
        alive
    );
    assert_eq!(ids(&resolver.instances()), alive);
    assert!(registrations.iter().all(|r| r.registrations() == 1));
    let revision = resolver.revision();
    registrations.pop().unwrap().deregister().await.unwrap();
    // `changed` would also answer the removals above, which no call has waited for yet.
    let changed = tokio::time::timeout(Duration::from_secs(5), resolver.wait_for(revision + 1))
        .await
        .unwrap();
    assert!(changed > revision);
    assert_eq!(resolver.instances().len(), 39);
}

/// The resolver picks round robin, at random and by fewest requests in flight, and never a
/// draining instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_picks_by_strategy_and_skips_draining_instances() {
    let server = Server::start();
    let client = Client::connect(server.endpoint()).await.unwrap();
    let mut registrations = Vec::new();
    for i in 0..3 {
        let options = RegisterOptions::new("db", format!("d{i}"), format!("10.1.0.{i}:5432"));
        registrations.push(client.register(options).await.unwrap());
    }
    let mut resolver = client.resolver("db").await.unwrap();
    assert_eq!(resolver.instances().len(), 3);
    let turns: Vec<String> = (0..6)
        .map(|_| resolver.pick(Pick::RoundRobin).unwrap().instance.clone())
        .collect();
    assert_eq!(turns, ["d0", "d1", "d2", "d0", "d1", "d2"]);
    assert!(resolver.pick(Pick::Random).is_some());
    // Two requests held on each of d0 and d1: the next goes to d2, which then has one.
    let held: Vec<_> = ["d0", "d0", "d1", "d1"]
        .iter()
        .map(|want| {
            loop {
                let p = resolver.pick(Pick::RoundRobin).unwrap();
                if p.instance == *want {
                    break p;
                }
            }
        })
        .collect();
    let least = resolver.pick(Pick::LeastOutstanding).unwrap();
    assert_eq!(least.instance, "d2");
    drop(held);
    drop(least);
    // A request picked before the instance changed is uncounted when it ends after the change.
    let before = loop {
        let p = resolver.pick(Pick::RoundRobin).unwrap();
        if p.instance == "d0" {
            break p;
        }
    };
    registrations[0].set_status("warning").await.unwrap();
    resolver.changed().await;
    drop(before);
    let spread: BTreeSet<String> = (0..3)
        .map(|_| {
            resolver
                .pick(Pick::LeastOutstanding)
                .unwrap()
                .instance
                .clone()
        })
        .collect();
    assert_eq!(spread.len(), 3, "{spread:?}");

    registrations[2].set_status("draining").await.unwrap();
    let revision = resolver.changed().await;
    assert!(revision > 0);
    assert_eq!(
        ids(&resolver.instances()),
        ["d0", "d1"].map(String::from).into()
    );
    assert_eq!(resolver.all_instances().len(), 3);
    assert!((0..10).all(|_| resolver.pick(Pick::Random).unwrap().instance != "d2"));
}

/// A second process registering the same instance id from another address replaces the first,
/// whose heartbeats are then refused as stale; an instance removed under a live registration
/// registers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_registration_stops_and_a_removed_one_registers_again() {
    let server = Server::start();
    let client = Client::connect(server.endpoint()).await.unwrap();
    let options = RegisterOptions::new("web", "w1", "10.2.0.1:80").ttl(Duration::from_secs(1));
    let mut first = client.register(options.clone()).await.unwrap();
    // The new process is elsewhere: a registration with the same address and metadata would be
    // taken for the first's own (one whose reply was lost) and carried on.
    let moved = RegisterOptions {
        address: "10.2.0.2:80".into(),
        ..options
    };
    let second = client.register(moved).await.unwrap();
    assert_ne!(first.lease(), second.lease());
    tokio::time::timeout(Duration::from_secs(5), first.replaced())
        .await
        .expect("the first registration learns it was replaced");
    let e = client
        .registry_heartbeat("web", "w1", first.lease())
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::StaleToken, "lease"));

    // An operator removes the instance; the live registration puts it back with a new lease.
    client.registry_deregister("web", "w1", 0).await.unwrap();
    eventually(Duration::from_secs(5), "w1 to register again", || async {
        second.registrations() == 2
    })
    .await;
    let now = client.registry_resolve("web", false).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].lease, second.lease());
    second.deregister().await.unwrap();
    assert!(
        client
            .registry_resolve("web", true)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error() {
    let server = Server::start();
    let client = Client::connect(server.endpoint()).await.unwrap();
    let base = pb::RegistryRegisterRequest {
        service: "api".into(),
        instance: "a".into(),
        address: "10.0.0.1:80".into(),
        ttl_ms: 5_000,
        ..Default::default()
    };
    let cases = [
        (
            pb::RegistryRegisterRequest {
                address: String::new(),
                ..base.clone()
            },
            "address",
            "address is 0 bytes; it must be 1 to 1024 bytes",
        ),
        (
            pb::RegistryRegisterRequest {
                ttl_ms: 0,
                ..base.clone()
            },
            "ttl",
            "ttl is 0ms; the minimum is 500ms",
        ),
        (
            pb::RegistryRegisterRequest {
                status: "sleepy".into(),
                ..base.clone()
            },
            "status",
            "status \"sleepy\" is not one of passing, warning, draining",
        ),
        (
            pb::RegistryRegisterRequest {
                service: "a service".into(),
                ..base.clone()
            },
            "service",
            "service name has ' ' at byte 1; names are 1 to 256 bytes of [A-Za-z0-9._/-]",
        ),
    ];
    for (request, field, message) in cases {
        let e = client.registry_register(request).await.unwrap_err();
        assert_eq!(
            (e.code, e.field.as_str(), e.message.as_str()),
            (Code::InvalidArgument, field, message)
        );
    }
    let e = client.registry_heartbeat("api", "a", 1).await.unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    assert_eq!(
        e.message,
        "instance a of api is not registered (it deregistered, or its lease expired)"
    );
    assert!(
        client
            .registry_resolve("api", true)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `plinth registry register` stays in the foreground heartbeating and deregisters on SIGTERM;
/// killed with -9 its instance expires. `list`, `status`, `services` and `watch` show it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_in_the_foreground_lists_and_watches() {
    use std::process::{Command, Stdio};
    let server = Server::start();
    let cli = |args: &[&str]| server.cli(args);
    let spawn = |args: &[&str]| {
        Command::new(Server::binary())
            .args(args)
            .env("PLINTH_ENDPOINT", server.endpoint())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut watch = spawn(&["registry", "watch", "api"]);
    let printed = Lines::follow(&mut watch);
    let mut one = spawn(&[
        "registry",
        "register",
        "api",
        "a1",
        "10.0.0.1:80",
        "--ttl",
        "2s",
        "--meta",
        "zone=a",
    ]);
    let mut two = spawn(&[
        "registry",
        "register",
        "api",
        "a2",
        "10.0.0.2:80",
        "--ttl",
        "2s",
    ]);
    let client = Client::connect(server.endpoint()).await.unwrap();
    eventually(Duration::from_secs(10), "both to register", || async {
        client.registry_resolve("api", false).await.unwrap().len() == 2
    })
    .await;
    // Two ttls go by: the heartbeats keep both.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let (code, out, _) = cli(&["registry", "list", "api"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "a1\t10.0.0.1:80\tpassing\tzone=a\na2\t10.0.0.2:80\tpassing\t\n"
    );
    assert_eq!(cli(&["registry", "status", "api", "a2", "draining"]).0, 0);
    assert_eq!(cli(&["registry", "list", "api"]).1.lines().count(), 1);
    assert_eq!(
        cli(&["registry", "list", "api", "--all"]).1.lines().count(),
        2
    );
    assert_eq!(cli(&["registry", "services"]).1, "api\t2 instances\n");

    // SIGTERM deregisters at once; kill -9 leaves the instance to expire.
    let _ = Command::new("kill")
        .args(["-TERM", &two.id().to_string()])
        .status();
    assert!(two.wait().unwrap().success());
    one.kill().unwrap();
    one.wait().unwrap();
    eventually(Duration::from_secs(10), "a1 to expire", || async {
        client
            .registry_resolve("api", true)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    printed.wait_for("the watch printed a1's expiry", |lines| {
        lines.iter().any(|l| l.ends_with("\t- a1\texpired"))
    });
    let _ = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status();
    watch.wait().unwrap();
    let lines = printed.finish();
    let text = lines.join("\n");
    // a1 shows as a registration ("+") or, if the watch began after it, in the snapshot ("=").
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" a1\t10.0.0.1:80\tpassing\tzone=a")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\t+ a2\t10.0.0.2:80\tdraining")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("\t- a2\tderegistered")),
        "{text}"
    );
    assert!(lines.last().unwrap().ends_with("\t- a1\texpired"), "{text}");
    let (code, _, err) = cli(&["registry", "deregister", "api", "a1"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
}
