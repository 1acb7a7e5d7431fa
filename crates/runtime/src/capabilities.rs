//! Capability sets of the container process: all five sets from the spec, and nothing in
//! the inheritable or ambient sets that the spec did not ask for (CVE-2022-29162 class).

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

/// The five capability sets to give the container process.
#[derive(Clone, Debug, Default)]
pub struct CapSets {
    /// Bounding set: everything else is dropped from it.
    pub bounding: CapsHashSet,
    /// Effective set.
    pub effective: CapsHashSet,
    /// Inheritable set.
    pub inheritable: CapsHashSet,
    /// Permitted set.
    pub permitted: CapsHashSet,
    /// Ambient set.
    pub ambient: CapsHashSet,
}

fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn convert(set: Option<&Capabilities>, field: &str, last: u8) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in set.into_iter().flatten() {
        let name = format!("CAP_{c}");
        let cap = Capability::from_str(&name).map_err(|_| {
            Error::invalid(format!(
                "process.capabilities.{field}: capability {name} is not known to berth-runtime"
            ))
        })?;
        if cap.index() > last {
            crate::logging::warn(format!(
                "process.capabilities.{field}: {name} is not supported by this kernel; skipped"
            ));
            continue;
        }
        out.insert(cap);
    }
    Ok(out)
}

impl CapSets {
    /// Converts the spec's sets (absent sets are empty).
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<CapSets> {
        let last = last_cap();
        let Some(c) = c else {
            return Ok(CapSets::default());
        };
        Ok(CapSets {
            bounding: convert(c.bounding().as_ref(), "bounding", last)?,
            effective: convert(c.effective().as_ref(), "effective", last)?,
            inheritable: convert(c.inheritable().as_ref(), "inheritable", last)?,
            permitted: convert(c.permitted().as_ref(), "permitted", last)?,
            ambient: convert(c.ambient().as_ref(), "ambient", last)?,
        })
    }

    /// Adds capabilities to the bounding, effective and permitted sets (`exec --cap`);
    /// never to inheritable or ambient (CVE-2022-29162 class).
    pub fn add(&mut self, names: &[String]) -> Result<()> {
        for n in names {
            let canon = caps::to_canonical(n);
            let cap = Capability::from_str(&canon)
                .map_err(|_| Error::invalid(format!("--cap {n:?}: unknown capability")))?;
            self.bounding.insert(cap);
            self.effective.insert(cap);
            self.permitted.insert(cap);
        }
        Ok(())
    }

    /// Drops everything outside the bounding set. Needs CAP_SETPCAP, so it runs before
    /// the user is switched.
    pub fn drop_bounding(&self) -> Result<()> {
        let current = caps::read(None, CapSet::Bounding)
            .map_err(|e| Error::invalid(format!("read the bounding set: {e}")))?;
        for cap in current.difference(&self.bounding) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(|e| Error::invalid(format!("drop {cap} from the bounding set: {e}")))?;
        }
        Ok(())
    }

    /// [`CapSets::apply`], with `held` kept in the permitted set (not the effective
    /// one): the runtime needs it for a step after the user is switched, and
    /// [`CapSets::raise_effective`] brings it back for that step.
    pub fn apply_holding(&self, held: Capability) -> Result<()> {
        let mut sets = self.clone();
        sets.permitted.insert(held);
        sets.set_triple()?;
        // The ambient set from the spec's own sets: the held capability is never
        // raised there, even when the spec lists it as ambient and inheritable.
        self.set_ambient()
    }

    /// Adds `cap` (which must be permitted: see [`CapSets::apply_holding`]) to the
    /// effective set, leaving the others as [`CapSets::apply_holding`] set them.
    pub fn raise_effective(&self, cap: Capability) -> Result<()> {
        let mut sets = self.clone();
        sets.permitted.insert(cap);
        sets.effective.insert(cap);
        sets.set_triple()
    }

    /// Sets the effective, permitted and inheritable sets in one capset(2) (the kernel
    /// checks the new triple as a whole), then the ambient set (whose members must be
    /// permitted and inheritable, as the kernel requires).
    pub fn apply(&self) -> Result<()> {
        self.set_triple()?;
        self.set_ambient()
    }

    /// The capset(2) of [`CapSets::apply`].
    fn set_triple(&self) -> Result<()> {
        let mask = |set: &CapsHashSet| {
            rustix::thread::CapabilitySet::from_bits_retain(
                set.iter().fold(0u64, |m, c| m | c.bitmask()),
            )
        };
        if !self.effective.is_subset(&self.permitted) {
            return Err(Error::invalid(
                "process.capabilities.effective must be a subset of process.capabilities.permitted",
            ));
        }
        rustix::thread::set_capabilities(
            None,
            rustix::thread::CapabilitySets {
                effective: mask(&self.effective),
                permitted: mask(&self.permitted),
                inheritable: mask(&self.inheritable),
            },
        )
        .map_err(|e| {
            Error::invalid(format!(
                "process.capabilities: set effective/permitted/inheritable: {}",
                std::io::Error::from(e)
            ))
        })
    }

    /// The ambient set of [`CapSets::apply`].
    fn set_ambient(&self) -> Result<()> {
        let err = |what: &str, e: caps::errors::CapsError| {
            Error::invalid(format!("process.capabilities.{what}: {e}"))
        };
        caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
        // As runc and crun: an ambient capability the kernel will not raise (one not
        // both permitted and inheritable, as `runc spec`'s own default lists three) is
        // skipped, not an error, so every bundle they run runs here too.
        for cap in &self.ambient {
            if !self.permitted.contains(cap) || !self.inheritable.contains(cap) {
                crate::logging::debug(format!(
                    "process.capabilities.ambient: {cap} not raised (not both permitted and inheritable)"
                ));
                continue;
            }
            if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
                crate::logging::debug(format!(
                    "process.capabilities.ambient: {cap} not raised: {e}"
                ));
            }
        }
        Ok(())
    }
}
