//! gRPC over unix sockets, as the kubelet's node services speak it: the CRI
//! endpoint, device plugins' registration and their own sockets, the Pod Resources
//! API. tonic dials URIs and serves TCP by default; this is the small glue for
//! sockets that berth's servers and clients share.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

/// Why a socket could not be listened on.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another server answers on it.
    #[error("{0} is in use: another server answers on it (stop it, or choose another path)")]
    InUse(PathBuf),
    /// A file-system step failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Listens on unix socket `path` with file mode `mode`, creating its directory. A
/// socket file left by a server that died is replaced; one that answers is
/// [`BindError::InUse`].
pub async fn bind(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let err = |what, source| BindError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("create the directory of", e))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| err("remove the stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err("listen on", e))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| err("set the mode of", e))?;
    Ok(listener)
}

/// The connections a listener accepts, as tonic's server takes them.
pub fn incoming(listener: UnixListener) -> tokio_stream::wrappers::UnixListenerStream {
    tokio_stream::wrappers::UnixListenerStream::new(listener)
}

/// A gRPC channel to the server on unix socket `socket`. The connector ignores the
/// placeholder URI tonic needs and opens the socket (again on every reconnect).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let s = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(UnixStream::connect(s).await?))
            }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.sock");
        let first = bind(&path, 0o600).await.unwrap();
        assert!(matches!(
            bind(&path, 0o600).await,
            Err(BindError::InUse(p)) if p == path
        ));
        drop(first);
        // The file stays behind its dead server: replaced.
        assert!(path.exists());
        let _second = bind(&path, 0o600).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
