//! Downloads for builds (a Dockerfile's `ADD <url>`): one HTTP(S) GET streamed to a
//! file while its sha256 is computed, with the server's Last-Modified time kept for
//! the file's mtime, as docker does. TLS trusts the system's roots.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::registry::chain;

/// What a download brought.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// The content's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The server's Last-Modified time, if it gave one.
    pub last_modified: Option<SystemTime>,
}

/// The file name a URL's path ends in, decoded (`https://h/a/my%20b.tar.gz?x=1` →
/// `my b.tar.gz`), the name `ADD` gives the file in a destination directory; None
/// when the path ends in `/`, is empty, or decodes to no plain name.
pub fn file_name(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?;
    let name = percent_encoding::percent_decode_str(last)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty() && name != "." && name != ".." && !name.contains('/')).then_some(name)
}

/// Downloads `url` into `to` (created or truncated). Runs on a thread of its own with
/// its own runtime, so that callers inside or outside an async runtime can wait for it.
pub fn download(url: &str, to: &Path) -> Result<Downloaded> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ctx(|| "start the download's runtime")?;
            rt.block_on(fetch(url, to))
        })
        .join()
        .unwrap_or_else(|_| Err(Error::invalid(format!("download of {url} panicked"))))
    })
}

async fn fetch(url: &str, to: &Path) -> Result<Downloaded> {
    let bad = |why: String| Error::invalid(format!("download {url}: {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the {} scheme is not supported (http and https are)",
            parsed.scheme()
        )));
    }
    let tls = crate::registry::tls::client_config(&[], true)?;
    let http = crate::registry::http_client(tls)
        .map_err(|e| bad(format!("HTTP client setup: {}", chain(&e))))?;
    let mut resp = http.get(parsed).send().await.map_err(|e| bad(chain(&e)))?;
    if !resp.status().is_success() {
        return Err(bad(format!("the server answered {}", resp.status())));
    }
    let last_modified = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let mut file = std::fs::File::create(to).ctx(|| format!("create {}", to.display()))?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| bad(chain(&e)))? {
        hash.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .ctx(|| format!("write {}", to.display()))?;
    }
    file.sync_all().ctx(|| format!("write {}", to.display()))?;
    Ok(Downloaded {
        digest: Digest::from_bytes(&hash.finalize()),
        size,
        last_modified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_path() {
        assert_eq!(
            file_name("https://h/a/b.tar.gz?x=1").as_deref(),
            Some("b.tar.gz")
        );
        assert_eq!(file_name("http://h:8080/f").as_deref(), Some("f"));
        assert_eq!(file_name("http://h/dir/"), None);
        assert_eq!(
            file_name("http://h/my%20file.txt").as_deref(),
            Some("my file.txt")
        );
        assert_eq!(file_name("http://h/a%2Fb"), None);
        assert_eq!(file_name("http://h"), None);
    }

    #[test]
    fn other_schemes_and_dead_servers_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("f");
        let e = download("ftp://h/f", &to).unwrap_err().to_string();
        assert!(e.contains("ftp scheme is not supported"), "{e}");
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = download(&format!("http://127.0.0.1:{port}/f"), &to)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("download http://127.0.0.1:{port}/f")),
            "{e}"
        );
    }
}
