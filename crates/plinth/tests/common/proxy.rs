//! A fault-injecting TCP proxy between replicas, for network partitions with every process
//! alive.
//!
//! Replica `i` listens on its own loopback address, `127.0.0.{10 + i}`, and (as every node that
//! listens on one address does) opens its connections to other members from it. The others
//! reach it only through its proxy, which is the address in `--peers`. The proxy therefore knows
//! which replica opened each connection, and it lets through only connections whose two ends
//! are on the same side of the partition. Clients connect to the replicas directly and are never
//! cut.
//!
//! A partition behaves like a network that drops packets. A connection open across it stops
//! carrying bytes but stays open, and a new connection across it is accepted and then hears
//! nothing. Both are closed when the partition heals, and the replicas reconnect.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which side each replica is on; empty when the network is whole.
pub type Sides = BTreeMap<u64, usize>;

/// The loopback address replica `id` listens on and connects from.
pub fn replica_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        10 + u8::try_from(id).expect("a small id"),
    ))
}

/// The replica a connection came from, by its source address.
pub fn replica_of(source: IpAddr) -> Option<u64> {
    match source {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > 10 => {
            Some(u64::from(v4.octets()[3] - 10))
        }
        _ => None,
    }
}

pub fn connected(sides: &Sides, from: Option<u64>, to: u64) -> bool {
    match (from.and_then(|f| sides.get(&f)), sides.get(&to)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

pub struct Network {
    sides: watch::Sender<Sides>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Network {
    pub fn new() -> Network {
        Network {
            sides: watch::Sender::new(Sides::new()),
            tasks: Vec::new(),
        }
    }

    /// Starts the proxy in front of replica `to` at `upstream`; returns the address members
    /// reach it at. Call from within a Tokio runtime.
    pub fn proxy(&mut self, to: u64, upstream: SocketAddr) -> SocketAddr {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let listener = TcpListener::from_std(std_listener).expect("a tokio listener");
        let sides = self.sides.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Ok((inbound, source)) = listener.accept().await {
                let from = replica_of(source.ip());
                tokio::spawn(carry(inbound, upstream, from, to, sides.subscribe()));
            }
        }));
        addr
    }

    /// Splits the replicas into `groups`: only replicas in the same group reach each other.
    pub fn partition(&self, groups: &[&[u64]]) {
        let sides = groups
            .iter()
            .enumerate()
            .flat_map(|(side, ids)| ids.iter().map(move |id| (*id, side)))
            .collect();
        self.sides.send_replace(sides);
    }

    pub fn heal(&self) {
        self.sides.send_replace(Sides::new());
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One connection from `from` (a replica, or anything else) to replica `to`.
async fn carry(
    mut inbound: TcpStream,
    upstream: SocketAddr,
    from: Option<u64>,
    to: u64,
    mut sides: watch::Receiver<Sides>,
) {
    if connected(&sides.borrow_and_update(), from, to) {
        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = outbound.set_nodelay(true);
        let _ = inbound.set_nodelay(true);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = sides.wait_for(|s| !connected(s, from, to)) => {}
        }
        // Cut: both ends stay open and hear nothing until the network heals.
        let _ = sides.wait_for(|s| connected(s, from, to)).await;
        drop(outbound);
    } else {
        let _ = sides.wait_for(|s| connected(s, from, to)).await;
    }
    drop(inbound);
}
