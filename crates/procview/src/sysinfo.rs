//! The container's answer to sysinfo(2): what the kernel would say if the container
//! were a machine of its own — its memory limit as total RAM, its use, its swap
//! allowance, its age as uptime, its load averages and its task count.

use crate::cgroup::Cgroups;
use crate::render;

/// sysinfo(2)'s fields, in bytes (mem_unit 1) and seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Answer {
    /// Seconds since boot (here: since the container's oldest process started).
    pub uptime: i64,
    /// 1, 5 and 15 minute load averages, scaled by 2^16 as the kernel gives them.
    pub loads: [u64; 3],
    /// Total usable memory.
    pub totalram: u64,
    /// Memory not in use.
    pub freeram: u64,
    /// Shared memory.
    pub sharedram: u64,
    /// Memory used by buffers.
    pub bufferram: u64,
    /// Total swap.
    pub totalswap: u64,
    /// Swap not in use.
    pub freeswap: u64,
    /// Number of tasks.
    pub procs: u16,
    /// High memory (none on 64-bit).
    pub totalhigh: u64,
    /// Free high memory.
    pub freehigh: u64,
}

/// The kernel's scale for load averages in sysinfo (SI_LOAD_SHIFT).
const SI_LOAD_SHIFT: u32 = 16;

impl Answer {
    /// The host's own answer, as the kernel gives it to the agent (a 64-bit one: the
    /// agent answers 64-bit callers only, see [`Answer::to_lp64`]).
    pub fn host() -> Answer {
        let s = rustix::system::sysinfo();
        let unit = u64::from(s.mem_unit.max(1));
        Answer {
            uptime: s.uptime,
            loads: s.loads,
            totalram: s.totalram * unit,
            freeram: s.freeram * unit,
            sharedram: s.sharedram * unit,
            bufferram: s.bufferram * unit,
            totalswap: s.totalswap * unit,
            freeswap: s.freeswap * unit,
            procs: s.procs,
            totalhigh: s.totalhigh * unit,
            freehigh: s.freehigh * unit,
        }
    }

    /// The answer for a container in `cg` with load averages `loads`, started at
    /// `start` (clock ticks since boot, see [`render::container_start`]), beginning
    /// from the host's: memory from the limit (the host's when there is none), uptime,
    /// loads and tasks from the container.
    pub fn for_container(
        cg: &Cgroups,
        loads: (f64, f64, f64),
        start: Option<u64>,
        host: Answer,
    ) -> Answer {
        let mut a = host;
        if let Some(m) = render::memory(cg, host.totalram) {
            a.totalram = m.total;
            a.freeram = m.free;
            a.sharedram = m.shared;
            a.bufferram = 0;
            a.totalswap = m.swap_total;
            a.freeswap = m.swap_free;
            a.totalhigh = 0;
            a.freehigh = 0;
        }
        a.uptime = render::uptime_since(start) as i64;
        let scale = f64::from(1u32 << SI_LOAD_SHIFT);
        a.loads = [loads.0, loads.1, loads.2].map(|l| (l * scale) as u64);
        a.procs = cg.task_count().min(u64::from(u16::MAX)) as u16;
        a
    }

    /// `struct sysinfo` as the kernel lays it out for a 64-bit process (x86_64,
    /// aarch64 and the other LP64 ABIs: longs are 8 bytes, 112 in all), with
    /// mem_unit 1. Written by hand because it is written into another process's
    /// memory: the bytes must be the ABI's, not whatever a Rust value holds.
    pub fn to_lp64(&self) -> [u8; SYSINFO_LP64_SIZE] {
        let mut b = [0u8; SYSINFO_LP64_SIZE];
        let mut put = |at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        put(0, self.uptime as u64);
        for (i, l) in self.loads.iter().enumerate() {
            put(8 + 8 * i, *l);
        }
        put(32, self.totalram);
        put(40, self.freeram);
        put(48, self.sharedram);
        put(56, self.bufferram);
        put(64, self.totalswap);
        put(72, self.freeswap);
        put(88, self.totalhigh);
        put(96, self.freehigh);
        b[80..82].copy_from_slice(&self.procs.to_ne_bytes());
        b[104..108].copy_from_slice(&1u32.to_ne_bytes());
        b
    }
}

/// The size of `struct sysinfo` for a 64-bit process.
pub const SYSINFO_LP64_SIZE: usize = 112;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_kernels() {
        assert_eq!(std::mem::size_of::<libc::sysinfo>(), SYSINFO_LP64_SIZE);
        assert_eq!(std::mem::offset_of!(libc::sysinfo, totalram), 32);
        assert_eq!(std::mem::offset_of!(libc::sysinfo, procs), 80);
        assert_eq!(std::mem::offset_of!(libc::sysinfo, totalhigh), 88);
        assert_eq!(std::mem::offset_of!(libc::sysinfo, mem_unit), 104);
        let a = Answer {
            uptime: 5,
            loads: [1 << 16, 2 << 16, 3 << 16],
            totalram: 256 << 20,
            procs: 3,
            ..Default::default()
        };
        let b = a.to_lp64();
        assert_eq!(u64::from_ne_bytes(b[32..40].try_into().unwrap()), 256 << 20);
        assert_eq!(u64::from_ne_bytes(b[16..24].try_into().unwrap()), 2 << 16);
        assert_eq!(u16::from_ne_bytes([b[80], b[81]]), 3);
        assert_eq!(u32::from_ne_bytes(b[104..108].try_into().unwrap()), 1);
    }

    #[test]
    fn a_process_without_limits_gets_the_hosts_memory() {
        let host = Answer::host();
        assert!(host.totalram > 0);
        let a = Answer::for_container(&Cgroups::default(), (0.5, 0.0, 0.0), None, host);
        assert_eq!(a.totalram, host.totalram);
        assert_eq!(a.loads[0], 1 << 15);
    }
}
