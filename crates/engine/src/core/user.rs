//! Who a container's processes run as: a user given by ID or name, or the image's
//! `User`, resolved against the image's own /etc/passwd and /etc/group (read beneath
//! the root filesystem: a symlink planted there cannot lead to the host's files).

use std::path::Path;

use crate::cri::User;
use crate::error::{Error, Result};

/// The resolved user: uid, gid and the groups the user is a member of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Further groups from /etc/group.
    pub additional_gids: Vec<u32>,
}

/// Resolves `user` (or, for [`User::Image`], the image's `User`, given as
/// `image_user`) beneath `rootfs`.
pub fn resolve(rootfs: &Path, user: &User, image_user: &str) -> Result<Resolved> {
    let spec = match user {
        User::Image => image_user.to_string(),
        User::Id { uid, gid: Some(g) } => format!("{uid}:{g}"),
        User::Id { uid, gid: None } => uid.to_string(),
        User::Name {
            name,
            group: Some(g),
        } => format!("{name}:{g}"),
        User::Name { name, group: None } => name.clone(),
    };
    let (uid, gid, additional_gids) = resolve_spec(rootfs, &spec)?;
    Ok(Resolved {
        uid,
        gid,
        additional_gids,
    })
}

/// Parses docker's `-u` value (`name`, `uid`, `name:group`, `uid:gid`).
pub fn parse(spec: &str) -> User {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g.to_string())),
        None => (spec, None),
    };
    if spec.is_empty() {
        return User::Image;
    }
    match (u.parse::<u32>(), g.as_deref().map(str::parse::<u32>)) {
        (Ok(uid), None) => User::Id { uid, gid: None },
        (Ok(uid), Some(Ok(gid))) => User::Id {
            uid,
            gid: Some(gid),
        },
        _ => User::Name {
            name: u.to_string(),
            group: g,
        },
    }
}

/// Resolves a user spec (`name`, `uid`, `name:group`, `uid:gid`) against the image's
/// /etc/passwd and /etc/group, read beneath `rootfs`: (uid, gid, additional gids).
pub fn resolve_spec(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = berth_image::inroot::read_to_string(rootfs, "etc/passwd").unwrap_or_default();
    let group = berth_image::inroot::read_to_string(rootfs, "etc/group").unwrap_or_default();
    let pw = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
    let uid: u32 = match (u.parse::<u32>(), &pw) {
        (Ok(n), _) => n,
        (Err(_), Some(f)) => f[2].parse().unwrap_or(0),
        (Err(_), None) if u.is_empty() => 0,
        (Err(_), None) => {
            return Err(Error::Invalid(format!(
                "user {u:?} is not in the image's /etc/passwd; give a numeric uid"
            )))
        }
    };
    let gid: u32 = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "group {g:?} is not in the image's /etc/group; give a numeric gid"
                    ))
                })?,
        },
        None => pw.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    let name = pw.as_ref().map(|f| f[0]).unwrap_or("");
    let extra: Vec<u32> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && !name.is_empty() && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .filter(|g| *g != gid)
        .collect();
    Ok((uid, gid, extra))
}
