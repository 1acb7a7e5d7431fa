//! Manifests, indexes and platforms, for OCI and Docker (schema 2) images alike.
//!
//! Fetched and loaded manifests are kept as the exact bytes they arrived as (their digest
//! is over those bytes); these types are only for reading them and for writing new ones.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker schema 1 (signed) manifest: refused.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The media types a registry is asked for, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A manifest document: one image, or an index of per-platform images.
#[derive(Clone, Debug)]
// Parsed once per operation and matched at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A single-platform image manifest.
    Manifest(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

/// Parses manifest bytes; `content_type` is the registry's header, if any.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("manifest is not JSON: {e}")))?;
    let mt = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .or(content_type.map(|c| c.split(';').next().unwrap_or(c).trim()))
        .unwrap_or("");
    let is_index = match mt {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        DOCKER_SCHEMA1 | "application/vnd.docker.distribution.manifest.v1+json" => {
            return Err(Error::invalid(
                "Docker schema 1 manifests are not supported (re-push the image with a current client)",
            ))
        }
        // No media type: an index has "manifests", an image has "config".
        "" => v.get("manifests").is_some(),
        other => {
            return Err(Error::invalid(format!(
                "unknown manifest media type {other:?}"
            )))
        }
    };
    if is_index {
        serde_json::from_value(v)
            .map(Parsed::Index)
            .map_err(|e| Error::invalid(format!("bad image index: {e}")))
    } else {
        serde_json::from_value(v)
            .map(Parsed::Manifest)
            .map_err(|e| Error::invalid(format!("bad image manifest: {e}")))
    }
}

/// The media type string of a descriptor.
pub fn media_type(d: &Descriptor) -> String {
    d.media_type().to_string()
}

/// Our digest type for a descriptor's digest.
pub fn digest_of(d: &Descriptor) -> Result<Digest> {
    Digest::try_from(d.digest())
}

/// A descriptor with the given media type, digest and size.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(
        MediaType::from(media_type),
        size,
        oci_spec::image::Digest::from(digest),
    )
}

/// An OS/architecture/variant to pick from a multi-platform index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture, in Go's names (`amd64`, `arm64`).
    pub arch: String,
    /// Variant (`v8`), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.arch
            && (self.variant.is_none() || p.variant().as_deref() == self.variant.as_deref())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(Error::invalid(format!(
                "platform {s:?}: expected os/arch[/variant], like linux/amd64"
            ))),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Picks the manifest for `platform` from an index.
pub fn choose(index: &ImageIndex, platform: &Platform) -> Result<Descriptor> {
    let found = index
        .manifests()
        .iter()
        .find(|m| m.platform().as_ref().is_some_and(|p| platform.matches(p)));
    match found {
        Some(d) => Ok(d.clone()),
        None => {
            let have: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|m| {
                    m.platform()
                        .as_ref()
                        .map(|p| format!("{}/{}", p.os(), p.architecture()))
                })
                .collect();
            Err(Error::not_found(format!(
                "no image for platform {platform} in the index (it has: {})",
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            )))
        }
    }
}

/// A new OCI image manifest over a config blob and layer descriptors.
pub fn image_manifest(
    config: &Digest,
    config_size: u64,
    layers: Vec<Descriptor>,
) -> Result<ImageManifest> {
    oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(OCI_MANIFEST)
        .config(descriptor(OCI_CONFIG, config, config_size))
        .layers(layers)
        .build()
        .map_err(|e| Error::invalid(format!("build the manifest: {e}")))
}

/// The layer digests (compressed blobs) of a manifest, in order.
pub fn layer_digests(m: &ImageManifest) -> Result<Vec<Digest>> {
    m.layers().iter().map(digest_of).collect()
}

/// The `rootfs.diff_ids` of an image config.
pub fn diff_ids(config: &serde_json::Value) -> Result<Vec<Digest>> {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::invalid("image config has no rootfs.diff_ids"))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| Error::invalid("rootfs.diff_ids holds a non-string"))?
                .parse()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_and_oci() {
        let d = Digest::of(b"c");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest(m.as_bytes(), None).unwrap(),
            Parsed::Manifest(_)
        ));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#
        );
        let Parsed::Index(idx) = parse_manifest(i.as_bytes(), Some(OCI_INDEX)).unwrap() else {
            panic!("an index")
        };
        assert!(choose(&idx, &"linux/arm64".parse().unwrap()).is_ok());
        let e = choose(&idx, &"linux/amd64".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux/arm64"), "{e}");
        assert!(parse_manifest(br#"{"mediaType":"application/x-nope"}"#, None).is_err());
    }
}
