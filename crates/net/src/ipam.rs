//! IP address management: one lease file per address (`leases/NETWORK/ADDRESS`, holding
//! the container's ID), created with O_EXCL so that two berth processes can never hand
//! out the same address, and kept on disk so that no address is handed out twice after
//! a restart. Released when the container's network is torn down.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::error::{Context, Error, Result};

/// The leases of one network.
pub struct Leases {
    dir: PathBuf,
}

impl Leases {
    /// The leases kept in `dir`.
    pub fn new(dir: PathBuf) -> Leases {
        Leases { dir }
    }

    /// The lease file of `addr`.
    pub fn path(&self, addr: Ipv4Addr) -> PathBuf {
        self.dir.join(addr.to_string())
    }

    /// Every lease: (address, holder).
    pub fn all(&self) -> Vec<(Ipv4Addr, String)> {
        self.all_named()
            .into_iter()
            .map(|(ip, holder, _)| (ip, holder))
            .collect()
    }

    /// Every lease with the names its holder answers to in DNS: (address, holder,
    /// names). A lease file holds the holder's ID on its first line and its names,
    /// space-separated, on the second.
    pub fn all_named(&self) -> Vec<(Ipv4Addr, String, Vec<String>)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                let mut lines = text.lines();
                let holder = lines.next()?.trim().to_string();
                let names = lines
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                Some((ip, holder, names))
            })
            .collect()
    }

    /// Leases an address of `subnet` (never the network, broadcast or `gateway`
    /// address) to `holder`: the next free one after the last handed out, so that a
    /// just-released address is not reused at once. `names` are what the holder
    /// answers to in DNS.
    pub fn allocate(
        &self,
        net: &str,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        holder: &str,
        names: &[String],
    ) -> Result<Ipv4Addr> {
        std::fs::create_dir_all(&self.dir).ctx(|| format!("create {}", self.dir.display()))?;
        let first = u32::from(subnet.network()) + 1;
        let last = u32::from(subnet.broadcast()).saturating_sub(1);
        if last < first {
            return Err(Error::Invalid(format!(
                "network {net}: subnet {subnet} has no addresses for containers"
            )));
        }
        let cursor_file = self.dir.join(".last");
        let cursor = std::fs::read_to_string(&cursor_file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|c| (first..=last).contains(c))
            .unwrap_or(last);
        let size = last - first + 1;
        for step in 1..=size {
            let candidate = first + (cursor - first + step) % size;
            let ip = Ipv4Addr::from(candidate);
            if ip == gateway {
                continue;
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path(ip))
            {
                Ok(mut f) => {
                    // Not fsync'd: a lease matters only while its container can run,
                    // and a host crash ends every container (and its namespace).
                    f.write_all(format!("{holder}\n{}\n", names.join(" ")).as_bytes())
                        .ctx(|| format!("write the lease of {ip}"))?;
                    let _ = std::fs::write(&cursor_file, ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("lease {ip}"), e)),
            }
        }
        Err(Error::Conflict(format!(
            "network {net} has no free address: all {} addresses of {subnet} are leased; remove containers from it or use a network with a larger subnet",
            size - u32::from(subnet.contains(&gateway))
        )))
    }

    /// Releases every lease `holder` has (a crash may have left one without a record).
    pub fn release_all(&self, holder: &str) {
        for (ip, h) in self.all() {
            if h == holder {
                let _ = std::fs::remove_file(self.path(ip));
            }
        }
    }

    /// Whether any address is leased.
    pub fn any(&self) -> bool {
        !self.all().is_empty()
    }

    /// The directory of these leases.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_skip_the_gateway_and_run_out_clearly() {
        let d = tempfile::tempdir().unwrap();
        let l = Leases::new(d.path().join("n"));
        let subnet: Ipv4Net = "10.1.2.0/29".parse().unwrap();
        let gw: Ipv4Addr = "10.1.2.1".parse().unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(l.allocate("n", subnet, gw, &format!("c{i}"), &[]).unwrap());
        }
        let want: Vec<Ipv4Addr> = (2..=6).map(|x| Ipv4Addr::new(10, 1, 2, x)).collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, want);
        let err = l
            .allocate("n", subnet, gw, "c9", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no free address") && err.contains("10.1.2.0/29"),
            "{err}"
        );
        // A release frees exactly the holder's address; the next one is handed out
        // after the last, not the freed one at once... unless it is the only one.
        l.release_all("c2");
        assert_eq!(l.allocate("n", subnet, gw, "c10", &[]).unwrap(), got[2]);
        assert_eq!(l.all().len(), 5);
    }
}
