//! Connections to endpoints: TCP with no delay, a connect timeout, and the DSCP mark
//! the node's NetworkPolicy rules let in from other nodes' proxies (hyper-util's
//! HttpConnector cannot set a socket's TOS, so this small connector replaces it).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

/// How long a connection to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `http://IP:PORT` URIs (endpoints are addresses, never names).
#[derive(Clone, Debug)]
pub struct Connector {
    /// The DSCP value for the connections' packets, if any.
    pub dscp: Option<u8>,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

impl Connector {
    async fn connect(self, uri: Uri) -> std::io::Result<TokioIo<TcpStream>> {
        let host = uri.host().unwrap_or("");
        let port = uri.port_u16().unwrap_or(80);
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| invalid(format!("endpoint {host:?} is not an address")))?;
        let addr = SocketAddr::new(ip, port);
        let sock = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let (Some(d), SocketAddr::V4(_)) = (self.dscp, addr) {
            // DSCP is the top six bits of the TOS byte.
            sock.set_tos_v4(u32::from(d) << 2)?;
        }
        sock.set_nodelay(true)?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                )
            })??;
        Ok(TokioIo::new(stream))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}
