//! Registry credentials and challenges: the `auths` file docker and podman keep
//! (`{"auths": {"host": {"auth": base64("user:pass")}}}`), and the `WWW-Authenticate`
//! challenges of the distribution spec (Basic, and Bearer with a token service).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

use crate::error::{Context, Error, Result};

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// berth's credentials file, unless `BERTH_AUTH_FILE` names another.
pub fn default_auth_file() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_AUTH_FILE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config/berth/auth.json")
}

/// Files also read for credentials (written by `docker login` and `podman login`).
fn other_auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(h) = std::env::var_os("HOME").map(PathBuf::from) {
        v.push(h.join(".docker/config.json"));
    }
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        v.push(r.join("containers/auth.json"));
    }
    v
}

fn read_file(p: &Path) -> Result<Value> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::invalid(format!("credentials file {} is not JSON: {e}", p.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

fn decode(entry: &Value) -> Option<Credentials> {
    let raw = entry.get("auth")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// The credentials stored for `registry`, looked up in `file` then docker's and
/// podman's files.
pub fn lookup(file: &Path, registry: &str) -> Result<Option<Credentials>> {
    let mut files = vec![file.to_path_buf()];
    files.extend(other_auth_files());
    for (i, f) in files.iter().enumerate() {
        // berth's own file must be readable; docker's and podman's are best effort.
        let v = match read_file(f) {
            Ok(v) => v,
            Err(e) if i == 0 => return Err(e),
            Err(_) => continue,
        };
        let auths = v.get("auths");
        let keys = [
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ];
        let hub = registry == "docker.io";
        for k in keys
            .iter()
            .map(String::as_str)
            .chain(hub.then_some("https://index.docker.io/v1/"))
        {
            if let Some(c) = auths.and_then(|a| a.get(k)).and_then(decode) {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Stores credentials for `registry` in `file` (mode 0600), keeping other entries.
pub fn store(file: &Path, registry: &str, c: &Credentials) -> Result<()> {
    let mut v = read_file(file)?;
    if !v.is_object() {
        v = json!({});
    }
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    if !v.get("auths").is_some_and(Value::is_object) {
        v["auths"] = json!({});
    }
    v["auths"][registry] = json!({ "auth": auth });
    write_private(file, &v)
}

/// Removes the credentials for `registry` from `file`; false if there were none.
pub fn remove(file: &Path, registry: &str) -> Result<bool> {
    let mut v = read_file(file)?;
    let removed = v
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .is_some_and(|a| a.remove(registry).is_some());
    if removed {
        write_private(file, &v)?;
    }
    Ok(removed)
}

fn write_private(file: &Path, v: &Value) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(v).expect("JSON");
    berth_hostdirs::write_private(file, text.as_bytes()).ctx(|| format!("write {}", file.display()))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lower-cased).
    pub scheme: String,
    /// Parameters (realm, service, scope, error...).
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth",service="registry",scope="repository:x:pull"`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, rest) = if let Some(q) = after.strip_prefix('"') {
            // Quoted string with backslash escapes.
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(k, val);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// The `Authorization` value for HTTP basic auth.
pub fn basic_header(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
    }

    #[test]
    fn stores_and_finds_credentials() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        store(&f, "localhost:5000", &c).unwrap();
        assert_eq!(lookup(&f, "localhost:5000").unwrap(), Some(c));
        assert!(remove(&f, "localhost:5000").unwrap());
        assert_eq!(lookup(&f, "localhost:5000").unwrap(), None);
    }
}
