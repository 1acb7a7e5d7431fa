//! A gRPC channel to a CRI socket — berth's or any runtime's — for Rust clients
//! (berth's tests and benchmarks drive both berth and containerd with it).

use std::path::Path;

use tonic::transport::{Channel, Endpoint};

/// Connects to the CRI server on unix socket `socket`. tonic dials URIs; the
/// connector ignores the placeholder one and opens the socket.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let s = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(s).await?,
                ))
            }
        }))
        .await
}
