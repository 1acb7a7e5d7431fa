//! Test harness: loopback ports for servers the tests start.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The kernel hands out ephemeral ports from 32768 up (Linux's default
/// ip_local_port_range); ports below it are never taken by an outgoing connection or
/// a bind to port 0, so one found free here stays free until the server binds it. A
/// port from `bind(":0")` did not: etcd lost its port to another test's connection
/// in the gap.
const FIRST: u32 = 20000;
const COUNT: u32 = 12000;

/// A loopback port below the ephemeral range that nothing listens on now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SEED: OnceLock<u32> = OnceLock::new();
    // Processes of one test run start at different offsets, so two tests seldom try
    // the same port, and the calls of one process walk one sequence, so they never
    // do; the bind check catches the rest.
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::process::id().wrapping_mul(2654435761) ^ nanos
    });
    for _ in 0..COUNT {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + seed.wrapping_add(step.wrapping_mul(7919)) % COUNT;
        let port = port as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT);
}
