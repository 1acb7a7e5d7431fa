//! The network helper: one process per host, started by the engine with the first
//! container on a bridge network and gone 30 s after the last berth container, when it
//! also takes the then unused bridges and firewall tables away (see
//! [`Networks::prune`]). Meanwhile it is the embedded DNS resolver of user-defined
//! networks, answering on UDP port 53 of each such network's gateway. A question for a
//! name leased on that network (a container's name or hostname) gets its address; any
//! other question is relayed to the host's resolvers. Containers there get the gateway
//! as their name server.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{
    rdata::{A, AAAA},
    RData, Record, RecordType,
};

use crate::network::Networks;

/// The lock a running helper holds (exclusive) for as long as it lives. There is one
/// helper per network state root (`$BERTH_NET_ROOT`): it answers for that root's
/// networks, so two roots (tests, nodes on one machine) each get their own.
pub fn lock_path(nets: &Networks) -> std::path::PathBuf {
    nets.state_dir().join(".helper.lock")
}

/// The lock container starts hold shared until their container exists, so that the
/// helper does not retire under them.
pub fn hold_path(nets: &Networks) -> std::path::PathBuf {
    nets.state_dir().join(".helper.hold")
}

/// How long answers may be cached: containers come and go.
const TTL: u32 = 10;

/// The answer to a question for `name` asked from `asker` on network `net`: a
/// container with that name on `net`, or on any other network the asking container is
/// also on (`network connect`).
fn lookup(
    nets: &Networks,
    net: &str,
    asker: Option<Ipv4Addr>,
    name: &str,
) -> Option<(Ipv4Addr, String)> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let find = |network: &str| {
        nets.leases(network)
            .all_named()
            .into_iter()
            .find(|(_, _, names)| names.iter().any(|n| n.to_ascii_lowercase() == name))
            .map(|(ip, _, _)| (ip, network.to_string()))
    };
    if let Some(ip) = find(net) {
        return Some(ip);
    }
    let here = nets.leases(net).all();
    let holder = here.iter().find(|(ip, _)| Some(*ip) == asker)?.1.clone();
    nets.list()
        .ok()?
        .into_iter()
        .filter(|n| n.dns && n.name != net)
        .filter(|n| nets.leases(&n.name).all().iter().any(|(_, h)| *h == holder))
        .find_map(|n| find(&n.name))
}

/// The host's first name server (the server runs in the host's network namespace, so
/// a loopback resolver is fine here).
fn upstream() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == "nameserver")
            .then(|| f.next()?.parse::<std::net::IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Answers one query packet arriving on network `net` from `from`; None to stay
/// silent.
pub fn answer(nets: &Networks, net: &str, from: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(packet).ok()?;
    let question = q.queries().first()?.clone();
    let name = question.name().to_ascii();
    let asker = match from.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(_) => None,
    };
    let found = lookup(nets, net, asker, &name);
    if found.is_none() {
        return relay(packet);
    }
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(question.clone());
    // A container known here but asked for a type it lacks (AAAA on a network without
    // IPv6): an empty answer, so that resolvers do not wait for one.
    match (found, question.query_type()) {
        (Some((ip, _)), RecordType::A) => {
            r.add_answer(Record::from_rdata(
                question.name().clone(),
                TTL,
                RData::A(A(ip)),
            ));
        }
        (Some((ip, network)), RecordType::AAAA) => {
            if let Some(v6) = nets.get(&network).ok().and_then(|n| n.ipv6_for(ip)) {
                r.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    RData::AAAA(AAAA(v6)),
                ));
            }
        }
        _ => {}
    }
    r.to_vec().ok()
}

fn relay(packet: &[u8]) -> Option<Vec<u8>> {
    let up = upstream()?;
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.send_to(packet, up).ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn berth_containers() -> usize {
    berth_cgroups::naming::count_containers(&berth_cgroups::Layout::host())
}

/// Serves until no berth container has existed for `idle`, then prunes. Holds
/// [`lock_path`] meanwhile.
pub fn serve(nets: &Networks, idle: Duration) -> std::io::Result<()> {
    std::fs::create_dir_all(nets.state_dir())?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(nets))?;
    if !take_helper_lock(&lock) {
        // Another server is already answering.
        return Ok(());
    }
    // network name → the socket on its gateway.
    let mut sockets: HashMap<String, UdpSocket> = HashMap::new();
    let mut quiet_since = Instant::now();
    let mut rescan = Instant::now() - Duration::from_secs(1);
    let mut buf = vec![0u8; 4096];
    loop {
        // Networks and bridges appear as containers join: look often, it is cheap.
        if rescan.elapsed() >= Duration::from_millis(200) {
            rescan = Instant::now();
            if !nets.state_dir().exists() {
                // Its root was removed (a test's, a deleted node's): nothing to serve.
                return Ok(());
            }
            let nets_now: Vec<_> = nets
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.dns)
                .collect();
            sockets.retain(|name, _| nets_now.iter().any(|n| &n.name == name));
            for n in nets_now {
                if !sockets.contains_key(&n.name) {
                    // The bridge (and its address) appears with the first container.
                    if let Ok(s) = UdpSocket::bind((n.gateway, 53)) {
                        s.set_nonblocking(true)?;
                        sockets.insert(n.name.clone(), s);
                    }
                }
            }
            if berth_containers() > 0 {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= idle {
                // Starts in progress hold the hold lock shared: retire only when none is, and
                // only if still no container exists — taking the unused bridges and
                // firewall tables with it.
                let hold = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(hold_path(nets))?;
                rustix::fs::flock(&hold, rustix::fs::FlockOperation::LockExclusive)?;
                if berth_containers() == 0 {
                    let _ = nets.prune();
                    berth_cgroups::naming::retire_engine_parent(&berth_cgroups::Layout::host());
                    return Ok(());
                }
                quiet_since = Instant::now();
            }
        }
        let names: Vec<&String> = sockets.keys().collect();
        let mut fds: Vec<rustix::event::PollFd<'_>> = names
            .iter()
            .map(|n| rustix::event::PollFd::new(&sockets[*n], rustix::event::PollFlags::IN))
            .collect();
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.revents().is_empty())
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        for i in ready {
            let net = names[i].clone();
            let s = &sockets[&net];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                if let Some(reply) = answer(nets, &net, from, &buf[..n]) {
                    let _ = s.send_to(&reply, from);
                }
            }
        }
    }
}

/// Takes the helper lock, or finds it held by another helper. [`is_running`] probes
/// the lock by holding it shared for a moment, so one failed try may be a probe (the
/// engine probes every few milliseconds while it waits for this helper): only a lock
/// still taken after 200 ms of tries belongs to another helper.
fn take_helper_lock(lock: &std::fs::File) -> bool {
    let end = Instant::now() + Duration::from_millis(200);
    loop {
        if rustix::fs::flock(lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether the helper of `nets`' root is running (it holds [`lock_path`]).
pub fn is_running(nets: &Networks) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().read(true).open(lock_path(nets)) else {
        return false;
    };
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A CI run lost a pod start to this: the helper met a probe's shared lock, took
    /// it for another helper and exited, and nothing served.
    #[test]
    fn probes_while_the_helper_starts_do_not_turn_it_away() {
        for _ in 0..5 {
            let root = tempfile::tempdir().unwrap();
            let nets = Networks::new(root.path());
            std::fs::create_dir_all(nets.state_dir()).unwrap();
            std::fs::write(lock_path(&nets), b"").unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let prober = {
                let (stop, nets) = (stop.clone(), Networks::new(root.path()));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        is_running(&nets);
                    }
                })
            };
            let server = {
                let nets = Networks::new(root.path());
                std::thread::spawn(move || serve(&nets, Duration::from_secs(600)))
            };
            let end = Instant::now() + Duration::from_secs(5);
            while !server.is_finished() && !is_running(&nets) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(
                !server.is_finished(),
                "the helper gave up on its lock while probes ran: {:?}",
                server.join()
            );
            // A second helper meets the first's lock and leaves at once.
            let again = Instant::now();
            serve(&nets, Duration::from_secs(600)).unwrap();
            assert!(again.elapsed() < Duration::from_secs(2));
            stop.store(true, Ordering::Relaxed);
            prober.join().unwrap();
            // Its root removed, the helper ends.
            std::fs::remove_dir_all(nets.state_dir()).unwrap();
            server.join().unwrap().unwrap();
        }
    }
}
