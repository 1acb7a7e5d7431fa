//! Pod CIDRs for tests that run side by side: a /24 of 10.SECOND.0.0/16 held while a
//! lock file is open, so that two tests never give their nodes one pod CIDR (each would
//! see the other's bridge as a route in the way). Shared by the engine's and the berth
//! CLI's tests.

use std::path::Path;

/// The third octet of a free /24 of 10.`second`.0.0/16 (100 to 249), held while the
/// returned file is open. A /24 a route of the host already covers (a bridge left by
/// a killed test) is passed over.
pub fn lease_octet(second: u8) -> (u32, std::fs::File) {
    let dir = Path::new("/tmp/berth-test-pod-cidrs").join(format!("10.{second}"));
    std::fs::create_dir_all(&dir).unwrap();
    let routed = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let start = std::process::id() % 150;
    for i in 0..150 {
        let octet = 100 + (start + i) % 150;
        // /proc/net/route has destinations in hex, little-endian.
        let dest = format!("{:08X}", u32::from_le_bytes([10, second, octet as u8, 0]));
        if routed
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(dest.as_str()))
        {
            continue;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{octet}.lock")))
            .unwrap();
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            return (octet, f);
        }
    }
    panic!("no free pod CIDR in 10.{second}.100.0 to 10.{second}.249.0 for this test");
}
