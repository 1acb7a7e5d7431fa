//! [`ImageService`] for the core: pulls through berth-image's registry client, the
//! rest from the image store.

use std::collections::BTreeMap;

use berth_image::oci::Platform;
use berth_image::progress::Progress;
use berth_image::reference::Reference;
use berth_image::registry::{Client, Credentials, RegistryOptions};

use crate::cri::{AuthConfig, FilesystemUsage, Image, ImageService};
use crate::error::{Error, Result};

use super::Core;

fn credentials(auth: &AuthConfig) -> Result<Option<Credentials>> {
    if !auth.username.is_empty() || !auth.password.is_empty() {
        return Ok(Some(Credentials {
            username: auth.username.clone(),
            password: auth.password.clone(),
        }));
    }
    if !auth.registry_token.is_empty() {
        // A bearer token is what an identity token is to docker: sent as the password
        // of the token user.
        return Ok(Some(Credentials {
            username: "<token>".into(),
            password: auth.registry_token.clone(),
        }));
    }
    if !auth.auth.is_empty() {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .map_err(|_| Error::Invalid("auth: not base64 of user:password".into()))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Error::Invalid("auth: not base64 of user:password".into()))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Error::Invalid("auth: not base64 of user:password".into()))?;
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
        }));
    }
    Ok(None)
}

/// Runs a future to completion from synchronous code: on the caller's tokio runtime
/// when it is on a blocking thread of one, else on a runtime of its own.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(h.block_on(f)),
        Err(_) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| Error::io("start a runtime for the pull", e))?;
            Ok(rt.block_on(f))
        }
    }
}

fn image_of(core: &Core, what: &str) -> Result<Option<Image>> {
    let img = match core.images().resolve_stored(what) {
        Ok(i) => i,
        Err(berth_image::Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let id = img.config_digest.to_string();
    let mut image = list(core)?
        .into_iter()
        .find(|i| i.id == id)
        .unwrap_or(Image {
            id,
            ..Default::default()
        });
    let user = img
        .config
        .pointer("/config/User")
        .and_then(|u| u.as_str())
        .unwrap_or("");
    let u = user.split(':').next().unwrap_or("");
    match u.parse::<i64>() {
        Ok(n) => image.uid = Some(n),
        Err(_) => image.username = u.to_string(),
    }
    Ok(Some(image))
}

fn list(core: &Core) -> Result<Vec<Image>> {
    let mut by_id: BTreeMap<String, Image> = BTreeMap::new();
    for s in core.images().summaries()? {
        let e = by_id.entry(s.id.to_string()).or_insert_with(|| Image {
            id: s.id.to_string(),
            size: s.size,
            ..Default::default()
        });
        if s.repository != "<none>" {
            if s.tag != "<none>" {
                e.repo_tags.push(format!("{}:{}", s.repository, s.tag));
            }
            let d = format!("{}@{}", s.repository, s.digest);
            if !e.repo_digests.contains(&d) {
                e.repo_digests.push(d);
            }
        }
    }
    Ok(by_id.into_values().collect())
}

impl ImageService for Core {
    fn pull_image(&self, image: &str, auth: Option<&AuthConfig>) -> Result<String> {
        let r: Reference = image.parse()?;
        let opts = RegistryOptions {
            credentials: auth.map(credentials).transpose()?.flatten(),
            ..Default::default()
        };
        let client = Client::new(opts);
        let store = self.images().clone();
        let pulled = block_on(async move {
            client
                .pull(&store, &r, &Platform::host(), &Progress::hidden(), true)
                .await
        })??;
        Ok(pulled.id.to_string())
    }

    fn image_status(&self, image: &str) -> Result<Option<Image>> {
        image_of(self, image)
    }

    fn list_images(&self, filter: Option<&str>) -> Result<Vec<Image>> {
        let all = list(self)?;
        match filter {
            None | Some("") => Ok(all),
            Some(f) => {
                let id = image_of(self, f)?.map(|i| i.id);
                Ok(all
                    .into_iter()
                    .filter(|i| Some(&i.id) == id.as_ref())
                    .collect())
            }
        }
    }

    fn remove_image(&self, image: &str) -> Result<()> {
        match self.images().remove_image_with_all_names(image) {
            Ok(_) | Err(berth_image::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn image_fs_info(&self) -> Result<Vec<FilesystemUsage>> {
        let u = self.images().usage()?;
        Ok(vec![FilesystemUsage {
            timestamp: berth_monitor::supervise::now_nanos(),
            mountpoint: self.images().root().display().to_string(),
            used_bytes: u.images_bytes + u.containers_bytes,
            inodes_used: berth_image::gc::inodes_below(self.images().root()),
        }])
    }
}
