//! A pod's volumes on the node, under `PODS/UID/volumes/KIND/NAME`: emptyDir (a
//! directory, or a tmpfs for medium Memory), hostPath (its type checked), configMap,
//! secret (on a tmpfs), downwardAPI and projected files written as the kubelet's atomic
//! writer does (a `..data` link swapped to a new timestamped directory in one rename,
//! so readers see the old files or the new, never a mix), and persistentVolumeClaims
//! bound to hostPath or local volumes. subPaths are opened beneath their volume
//! (openat2 RESOLVE_BENEATH: a symlink that leads outside is refused) and bound to a
//! staging path, so what the container gets is what was checked.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim,
    ServiceAccount, Volume,
};
use kube::Api;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::envvars::{self, PodFacts, Sources};
use crate::error::{ApiContext, Error, Result};

/// A prepared volume: the host path containers bind.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The host path.
    pub path: PathBuf,
    /// Mounted read-only whatever the volumeMount says (configMap, secret, downwardAPI,
    /// projected).
    pub read_only: bool,
}

fn io(what: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Io(what(), e)
}

/// Whether something is mounted on `path`: asked of statx (a mount root), else told by
/// a device other than its parent's — not by reading mountinfo, which every pod's sync
/// would otherwise do on a host with hundreds of mounts.
fn is_mountpoint(path: &Path) -> bool {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, CWD};
    if let Ok(r) = rustix::fs::statx(
        CWD,
        path,
        AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        if r.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
            return r.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
        }
    }
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.dev()).ok();
    match (dev(path), path.parent().and_then(dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<()> {
    if is_mountpoint(dir) {
        return Ok(());
    }
    let data = match size {
        Some(s) if s > 0 => format!("mode=0755,size={s}"),
        _ => "mode=0755".to_string(),
    };
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        Some(std::ffi::CString::new(data).unwrap_or_default().as_c_str()),
    )
    .map_err(|e| Error::Io(format!("mount a tmpfs on {}", dir.display()), e.into()))
}

/// Everything under `pod_dir` that is mounted, deepest first.
fn mounts_under(pod_dir: &Path) -> Vec<String> {
    let root = format!("{}/", pod_dir.display());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&root))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

/// Unmounts and removes everything of a pod's directory. Repeatable.
pub fn clean_up(pod_dir: &Path) -> Result<()> {
    remove_tree(pod_dir)
}

/// Unmounts and removes a pod's volumes, keeping its other files (termination
/// messages): what the kubelet does once a pod has ended, so that memory-backed
/// volumes give their memory back.
pub fn tear_down(pod_dir: &Path) -> Result<()> {
    let dir = pod_dir.join("volumes");
    if !dir.exists() {
        return Ok(());
    }
    remove_tree(&dir)
}

fn remove_tree(pod_dir: &Path) -> Result<()> {
    for p in mounts_under(pod_dir) {
        rustix::mount::unmount(p.as_str(), rustix::mount::UnmountFlags::DETACH)
            .map_err(|e| Error::Io(format!("unmount {p}"), e.into()))?;
    }
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(format!("remove {}", pod_dir.display()), e)),
    }
}

/// Writes `files` (relative path → content and mode) into `dir` as the kubelet's
/// atomic writer does; does nothing when they are what `..data` holds already.
/// Returns whether it wrote.
pub fn write_atomic(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(io(|| format!("create {}", dir.display())))?;
    let data = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data) {
        let cur = dir.join(current);
        let same = files.iter().all(|(p, (content, mode))| {
            let f = cur.join(p);
            std::fs::read(&f).is_ok_and(|c| &c == content)
                && std::fs::metadata(&f).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
        }) && count_files(&cur) == files.len();
        if same {
            return Ok(false);
        }
    }
    let stamp = format!(
        "..{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let new = dir.join(&stamp);
    std::fs::create_dir(&new).map_err(io(|| format!("create {}", new.display())))?;
    for (rel, (content, mode)) in files {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) || rel.starts_with("..") {
            return Err(Error::Spec(format!(
                "volume file path {rel:?} must be relative, without '..' or empty parts"
            )));
        }
        let f = new.join(rel);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(|| format!("create {}", parent.display())))?;
        }
        std::fs::write(&f, content).map_err(io(|| format!("write {}", f.display())))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode))
            .map_err(io(|| format!("chmod {}", f.display())))?;
    }
    // The swap: a new link renamed over ..data.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(io(|| format!("link {}", tmp.display())))?;
    std::fs::rename(&tmp, &data).map_err(io(|| format!("rename {}", data.display())))?;
    // Top-level names point through ..data.
    let mut tops: Vec<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link)
                .map_err(io(|| format!("link {}", link.display())))?;
        }
    }
    // Old payloads and links to names that went.
    for e in std::fs::read_dir(dir).map_err(io(|| format!("read {}", dir.display())))? {
        let e = e.map_err(io(|| format!("read {}", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != "..data" && name != stamp {
                let _ = std::fs::remove_dir_all(e.path());
            }
        } else if !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(true)
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += count_files(&e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

/// The files a configMap or secret volume holds: every key, or only `items`.
fn project_keys(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<()> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let v = data.get(&it.key).ok_or_else(|| {
                    Error::Missing(format!("{what}: no key {:?} (listed in items)", it.key))
                })?;
                out.insert(
                    it.path.clone(),
                    (v.clone(), it.mode.map_or(default_mode, |m| m as u32)),
                );
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k.clone(), (v.clone(), default_mode));
            }
        }
    }
    Ok(())
}

fn downward_files(
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<()> {
    let spec = facts.pod.spec.as_ref();
    for it in items {
        let v = if let Some(f) = &it.field_ref {
            envvars::field_value(facts, &f.field_path)?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = spec
                .and_then(|s| s.containers.iter().find(|c| c.name == name))
                .ok_or_else(|| {
                    Error::Spec(format!(
                        "downwardAPI file {}: resourceFieldRef names container {name:?}, which the pod does not have",
                        it.path
                    ))
                })?;
            envvars::resource_value(facts, c, &r.resource, r.divisor.as_ref())?
        } else {
            String::new()
        };
        out.insert(
            it.path.clone(),
            (v.into_bytes(), it.mode.map_or(default_mode, |m| m as u32)),
        );
    }
    Ok(())
}

/// Where a volume's keys come from.
enum KeySource<'a> {
    /// A ConfigMap by name.
    ConfigMap(&'a str),
    /// A Secret by name.
    Secret(&'a str),
}

/// Adds a ConfigMap's or Secret's keys (or its `items`) to a volume's files; a
/// missing source that is not optional is [`Error::Missing`], as the kubelet's
/// FailedMount says it.
async fn add_keys(
    sources: &mut Sources,
    src: KeySource<'_>,
    optional: Option<bool>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    volume: &str,
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<()> {
    let (kind, name, data) = match src {
        KeySource::ConfigMap(n) => ("configmap", n, sources.config_map_data(n).await?),
        KeySource::Secret(n) => ("secret", n, sources.secret_data(n).await?),
    };
    match data {
        Some(d) => project_keys(
            &d,
            items,
            mode,
            &format!("volume {volume} ({kind} {name})"),
            files,
        ),
        None if optional == Some(true) => Ok(()),
        None => Err(Error::Missing(format!(
            "MountVolume.SetUp failed for volume \"{volume}\" : {kind} \"{name}\" not found"
        ))),
    }
}

/// What preparing volumes needs besides the pod.
pub struct VolumeCtx<'a> {
    /// The API client (ConfigMaps, Secrets, PVCs, tokens).
    pub client: &'a kube::Client,
    /// The pod's directory.
    pub pod_dir: &'a Path,
    /// Pod facts for downward API files.
    pub facts: &'a PodFacts<'a>,
}

fn check_host_path(path: &Path, kind: &str, vol: &str) -> Result<()> {
    let meta = std::fs::metadata(path);
    let want = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(Error::Spec(format!(
                "hostPath volume {vol}: {} is not a {what} (type {kind})",
                path.display()
            )))
        }
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path).map_err(io(|| format!("create {}", path.display())))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io(|| format!("chmod {}", path.display())))?;
                return Ok(());
            }
            want(meta.is_ok_and(|m| m.is_dir()), "directory")
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p).map_err(io(|| format!("create {}", p.display())))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io(|| format!("create {}", path.display())))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io(|| format!("chmod {}", path.display())))?;
                return Ok(());
            }
            want(meta.is_ok_and(|m| m.is_file()), "file")
        }
        "Directory" => want(meta.is_ok_and(|m| m.is_dir()), "directory"),
        "File" => want(meta.is_ok_and(|m| m.is_file()), "file"),
        "Socket" => want(meta.is_ok_and(|m| m.file_type().is_socket()), "socket"),
        "CharDevice" => want(meta.is_ok_and(|m| m.file_type().is_char_device()), "character device"),
        "BlockDevice" => want(meta.is_ok_and(|m| m.file_type().is_block_device()), "block device"),
        other => Err(Error::Spec(format!(
            "hostPath volume {vol}: type {other:?} is not one of DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice"
        ))),
    }
}

async fn sa_token(
    cx: &VolumeCtx<'_>,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let pod = cx.facts.pod;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(cx.client.clone(), &ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration.unwrap_or(3607)),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let r = api
        .create_token_request(&sa, &Default::default(), &req)
        .await
        .api(|| format!("request a token for serviceaccount {ns}/{sa}"))?;
    Ok(r.status.map(|s| s.token).unwrap_or_default())
}

/// Makes (or refreshes) every volume of the pod; returns each by name. A missing
/// ConfigMap or Secret that is not optional is [`Error::Missing`].
pub async fn prepare(
    cx: &VolumeCtx<'_>,
    sources: &mut Sources,
    refresh_tokens: bool,
) -> Result<BTreeMap<String, Prepared>> {
    let mut out = BTreeMap::new();
    let Some(spec) = cx.facts.pod.spec.as_ref() else {
        return Ok(out);
    };
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .map(|g| g as u32);
    for v in spec.volumes.iter().flatten() {
        let p = prepare_one(cx, sources, v, refresh_tokens).await?;
        if let Some(gid) = fs_group {
            // The volumes the pod owns; an emptyDir once, when it is set up (files
            // its containers make later keep theirs), the others at every write.
            if v.empty_dir.is_some() {
                set_group_ownership(&p.path, gid, true)?;
            } else if v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
            {
                set_group_ownership(&p.path, gid, false)?;
            }
        }
        out.insert(v.name.clone(), p);
    }
    Ok(out)
}

/// fsGroup, as the kubelet applies it to a volume: every file and directory gets the
/// group, and directories the set-group-ID bit so that what is made in them later
/// gets it too. With `on_root_mismatch`, nothing is done when the root already has
/// both (fsGroupChangePolicy OnRootMismatch).
fn set_group_ownership(root: &Path, gid: u32, on_root_mismatch: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(root).map_err(io(|| format!("stat {}", root.display())))?;
    if on_root_mismatch && meta.gid() == gid && meta.mode() & 0o2000 != 0 {
        return Ok(());
    }
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).map_err(io(|| format!("stat {}", p.display())))?;
        std::os::unix::fs::lchown(&p, None, Some(gid)).map_err(io(|| {
            format!("chown {} to group {gid} (fsGroup)", p.display())
        }))?;
        if m.is_dir() {
            std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o2000),
            )
            .map_err(io(|| format!("chmod g+s {}", p.display())))?;
            for e in std::fs::read_dir(&p).map_err(io(|| format!("read {}", p.display())))? {
                todo.push(e.map_err(io(|| format!("read {}", p.display())))?.path());
            }
        }
    }
    Ok(())
}

fn vol_dir(cx: &VolumeCtx, kind: &str, name: &str) -> Result<PathBuf> {
    let d = cx.pod_dir.join("volumes").join(kind).join(name);
    std::fs::create_dir_all(&d).map_err(io(|| format!("create {}", d.display())))?;
    Ok(d)
}

/// A configMap or secret volume: its keys as files (a secret's on a tmpfs, never on
/// disk), read-only in containers.
async fn key_volume(
    cx: &VolumeCtx<'_>,
    sources: &mut Sources,
    src: KeySource<'_>,
    optional: Option<bool>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    name: &str,
) -> Result<Prepared> {
    let secret = matches!(src, KeySource::Secret(_));
    let d = vol_dir(cx, if secret { "secret" } else { "configmap" }, name)?;
    if secret {
        mount_tmpfs(&d, None)?;
    }
    let mut files = BTreeMap::new();
    let mode = default_mode.unwrap_or(0o644) as u32;
    add_keys(sources, src, optional, items, mode, name, &mut files).await?;
    write_atomic(&d, &files)?;
    Ok(Prepared {
        path: d,
        read_only: true,
    })
}

async fn prepare_one(
    cx: &VolumeCtx<'_>,
    sources: &mut Sources,
    v: &Volume,
    refresh_tokens: bool,
) -> Result<Prepared> {
    let name = &v.name;
    if let Some(e) = &v.empty_dir {
        let d = vol_dir(cx, "empty-dir", name)?;
        if e.medium.as_deref() == Some("Memory") {
            let size = e.size_limit.as_ref().map(crate::qos::value).transpose()?;
            mount_tmpfs(&d, size)?;
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
            .map_err(io(|| format!("chmod {}", d.display())))?;
        return Ok(Prepared {
            path: d,
            read_only: false,
        });
    }
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        check_host_path(&p, h.type_.as_deref().unwrap_or(""), name)?;
        return Ok(Prepared {
            path: p,
            read_only: false,
        });
    }
    if let Some(c) = &v.config_map {
        let src = KeySource::ConfigMap(&c.name);
        return key_volume(
            cx,
            sources,
            src,
            c.optional,
            c.items.as_ref(),
            c.default_mode,
            name,
        )
        .await;
    }
    if let Some(s) = &v.secret {
        let secret = s.secret_name.clone().unwrap_or_default();
        let src = KeySource::Secret(&secret);
        return key_volume(
            cx,
            sources,
            src,
            s.optional,
            s.items.as_ref(),
            s.default_mode,
            name,
        )
        .await;
    }
    if let Some(dw) = &v.downward_api {
        let d = vol_dir(cx, "downward-api", name)?;
        let mut files = BTreeMap::new();
        downward_files(
            cx.facts,
            dw.items.as_deref().unwrap_or_default(),
            dw.default_mode.unwrap_or(0o644) as u32,
            &mut files,
        )?;
        write_atomic(&d, &files)?;
        return Ok(Prepared {
            path: d,
            read_only: true,
        });
    }
    if let Some(p) = &v.projected {
        let d = vol_dir(cx, "projected", name)?;
        mount_tmpfs(&d, None)?;
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        let mut files = BTreeMap::new();
        // The token is written again only when asked (it is refreshed before it
        // expires), else the one written before is kept.
        let token_file =
            |path: &str| -> Option<Vec<u8>> { std::fs::read(d.join("..data").join(path)).ok() };
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                let src = KeySource::ConfigMap(&c.name);
                add_keys(
                    sources,
                    src,
                    c.optional,
                    c.items.as_ref(),
                    mode,
                    name,
                    &mut files,
                )
                .await?;
            }
            if let Some(s) = &src.secret {
                let src = KeySource::Secret(&s.name);
                add_keys(
                    sources,
                    src,
                    s.optional,
                    s.items.as_ref(),
                    mode,
                    name,
                    &mut files,
                )
                .await?;
            }
            if let Some(dw) = &src.downward_api {
                downward_files(
                    cx.facts,
                    dw.items.as_deref().unwrap_or_default(),
                    mode,
                    &mut files,
                )?;
            }
            if let Some(t) = &src.service_account_token {
                let token = match token_file(&t.path) {
                    Some(existing) if !refresh_tokens => existing,
                    _ => sa_token(cx, t.audience.clone(), t.expiration_seconds)
                        .await?
                        .into_bytes(),
                };
                files.insert(t.path.clone(), (token, mode));
            }
            if let Some(ctb) = &src.cluster_trust_bundle {
                return Err(Error::Spec(format!(
                    "projected volume {name}: clusterTrustBundle ({}) is not supported by berth's agent",
                    ctb.path
                )));
            }
        }
        write_atomic(&d, &files)?;
        return Ok(Prepared {
            path: d,
            read_only: true,
        });
    }
    if let Some(c) = &v.persistent_volume_claim {
        let ns = cx.facts.pod.metadata.namespace.clone().unwrap_or_default();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(cx.client.clone(), &ns);
        let pvc = pvcs
            .get_opt(&c.claim_name)
            .await
            .api(|| format!("get persistentvolumeclaim {ns}/{}", c.claim_name))?
            .ok_or_else(|| {
                Error::Missing(format!(
                    "persistentvolumeclaim \"{}\" not found (volume {name})",
                    c.claim_name
                ))
            })?;
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Error::Missing(format!(
                    "persistentvolumeclaim \"{}\" is not bound to a volume yet (volume {name})",
                    c.claim_name
                ))
            })?;
        let pvs: Api<PersistentVolume> = Api::all(cx.client.clone());
        let pv = pvs
            .get_opt(&pv_name)
            .await
            .api(|| format!("get persistentvolume {pv_name}"))?
            .ok_or_else(|| {
                Error::Missing(format!(
                    "persistentvolume \"{pv_name}\" not found (volume {name})"
                ))
            })?;
        let spec = pv.spec.unwrap_or_default();
        let path = if let Some(h) = spec.host_path {
            check_host_path(Path::new(&h.path), h.type_.as_deref().unwrap_or(""), name)?;
            h.path
        } else if let Some(l) = spec.local {
            l.path
        } else {
            return Err(Error::Spec(format!(
                "volume {name}: persistentvolume {pv_name} is neither hostPath nor local, the kinds berth's agent mounts"
            )));
        };
        return Ok(Prepared {
            path: PathBuf::from(path),
            read_only: c.read_only == Some(true),
        });
    }
    Err(Error::Spec(format!(
        "volume {name}: its kind is not one berth's agent supports (emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim)"
    )))
}

/// The host path a volumeMount binds: the volume, or its subPath opened beneath it and
/// bound to a staging path under the pod's directory (created as a directory when
/// missing, as the kubelet does). `index` tells the mounts of one container apart.
pub fn mount_source(
    pod_dir: &Path,
    container: &Container,
    index: usize,
    volume: &Prepared,
    sub_path: &str,
) -> Result<PathBuf> {
    if sub_path.is_empty() {
        return Ok(volume.path.clone());
    }
    let bad = || {
        Error::Spec(format!(
            "container {}: subPath {sub_path:?} must be a relative path without '..'",
            container.name
        ))
    };
    let rel = Path::new(sub_path);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad());
    }
    let root = rustix::fs::open(
        &volume.path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Io(format!("open volume {}", volume.path.display()), e.into()))?;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let escape = |e: rustix::io::Errno| {
        if e == rustix::io::Errno::XDEV {
            Error::Spec(format!(
                "container {}: subPath {sub_path:?} leads outside its volume (through a symlink): refused",
                container.name
            ))
        } else {
            Error::Io(
                format!("open subPath {sub_path:?} of {}", volume.path.display()),
                e.into(),
            )
        }
    };
    // Missing parts are made as directories, each beneath the volume.
    let parts: Vec<PathBuf> = (1..=rel.components().count())
        .map(|n| rel.iter().take(n).collect())
        .collect();
    let mut dir = None;
    for (i, prefix) in parts.iter().enumerate() {
        let open = |p: &Path, flags: OFlags| {
            rustix::fs::openat2(root.as_fd(), p, flags | OFlags::CLOEXEC, Mode::empty(), how)
        };
        dir = Some(match open(prefix, OFlags::PATH) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                let parent = if i == 0 {
                    PathBuf::from(".")
                } else {
                    parts[i - 1].clone()
                };
                let pfd = open(&parent, OFlags::DIRECTORY).map_err(escape)?;
                let name = prefix.file_name().unwrap_or_default();
                match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => {
                        return Err(Error::Io(format!("create subPath {sub_path:?}"), e.into()))
                    }
                }
                open(prefix, OFlags::PATH).map_err(escape)?
            }
            Err(e) => return Err(escape(e)),
        });
    }
    let Some(dir) = dir else {
        return Err(bad());
    };
    let is_dir = rustix::fs::fstat(&dir)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .unwrap_or(true);
    let stage = pod_dir
        .join("volume-subpaths")
        .join(&container.name)
        .join(index.to_string());
    if is_mountpoint(&stage) {
        let _ = rustix::mount::unmount(&stage, rustix::mount::UnmountFlags::DETACH);
    }
    if let Some(p) = stage.parent() {
        std::fs::create_dir_all(p).map_err(io(|| format!("create {}", p.display())))?;
    }
    if is_dir {
        std::fs::create_dir_all(&stage).map_err(io(|| format!("create {}", stage.display())))?;
    } else if !stage.exists() {
        std::fs::write(&stage, b"").map_err(io(|| format!("create {}", stage.display())))?;
    }
    // Bound through the checked descriptor: what was opened is what is mounted.
    let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
    rustix::mount::mount_bind(fd_path.as_str(), &stage).map_err(|e| {
        Error::Io(
            format!("bind subPath {sub_path:?} to {}", stage.display()),
            e.into(),
        )
    })?;
    Ok(stage)
}
