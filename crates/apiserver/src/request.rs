//! A request as the object path sees it, its body read, and the response it gets:
//! plain data shared by the HTTPS server, the in-process entry point and every
//! handler, so it imports nothing else of the crate.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The user's uid, when known.
    pub uid: String,
    /// Groups (with system:authenticated, but for [`User::anonymous`]).
    pub groups: Vec<String>,
    /// Extra attributes (ServiceAccount tokens carry pod bindings).
    pub extra: Vec<(String, String)>,
}

/// The user of a request without credentials.
pub const ANONYMOUS: &str = "system:anonymous";

impl User {
    pub(crate) fn new(name: &str, uid: &str, groups: Vec<String>) -> User {
        let mut g = groups;
        if !g.iter().any(|x| x == "system:authenticated") {
            g.push("system:authenticated".into());
        }
        User {
            name: name.into(),
            uid: uid.into(),
            groups: g,
            extra: Vec::new(),
        }
    }

    /// A request without credentials, as kube's --anonymous-auth names it: in
    /// system:unauthenticated alone, authorized as any other user is.
    pub fn anonymous() -> User {
        User {
            name: ANONYMOUS.into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: Vec::new(),
        }
    }

    /// A component's own identity (the in-process scheduler's and controllers').
    pub fn component(name: &str, groups: Vec<String>) -> User {
        User::new(name, "", groups)
    }
}

/// The largest request body accepted (kube's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A request, its body read.
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The authenticated user (None: anonymous).
    pub user: Option<User>,
}

impl Request {
    /// A query parameter.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// A header as text.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }

    /// The body's media type: the content type without its parameters.
    pub fn media_type(&self) -> &str {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
    }

    /// Whether the client asked for metadata only (PartialObjectMetadata and its
    /// List, as kube's metadata clients and garbage collector ask).
    pub fn wants_metadata(&self) -> bool {
        self.header("accept").is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
        })
    }

    /// Whether the client asked for a Table.
    pub fn wants_table(&self) -> bool {
        self.header("accept").is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
    }
}

/// A response body.
pub enum Body {
    /// All at once.
    Full(Bytes),
    /// Chunks as they come (watches).
    Stream(mpsc::Receiver<Bytes>),
}

/// A response.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, v: &Value) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Full(Bytes::from(serde_json::to_vec(v).unwrap_or_default())),
        }
    }

    /// A response with a content type.
    pub fn bytes(status: u16, content_type: &str, b: impl Into<Bytes>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: Body::Full(b.into()),
        }
    }

    /// Adds a header.
    pub fn with(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A response body: whole, or streamed from a channel (watches).
pub enum RespBody {
    /// The whole body (taken once).
    Full(Option<Bytes>),
    /// Chunks from a channel.
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for RespBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RespBody::Full(None))
    }
}

#[cfg(test)]
impl Request {
    /// A request for unit tests: a path, query pairs, headers and a body.
    pub(crate) fn test(
        method: Method,
        query: &[(&str, &str)],
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> Request {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().expect("a header value"));
        }
        Request {
            method,
            path: "/api/v1/namespaces/default/configmaps".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: h,
            body: Bytes::from(body.to_string()),
            user: None,
        }
    }
}
