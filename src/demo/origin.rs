//! The demo's origin: a few objects served from memory on loopback, each with a
//! `Cache-Control` that lets the cache nodes keep it, so a second request is a HIT.
//! Every request it sees is logged: the log shows the origin is asked once.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// How long the cache nodes may keep an object.
const CACHE_CONTROL: &str = "public, max-age=300";

/// The objects: path and body.
pub const OBJECTS: [(&str, Object); 3] = [
    ("/hello.txt", Object::Text),
    ("/1k.bin", Object::Bytes(1024)),
    ("/100k.bin", Object::Bytes(100 * 1024)),
];

/// What an object's body is.
#[derive(Debug, Clone, Copy)]
pub enum Object {
    /// A line of text naming the demo.
    Text,
    /// This many bytes of a repeating pattern.
    Bytes(usize),
}

impl Object {
    fn body(self) -> (Bytes, &'static str) {
        match self {
            Self::Text => (
                Bytes::from_static(b"Hello from the Meridian demo origin.\n"),
                "text/plain; charset=utf-8",
            ),
            Self::Bytes(len) => (
                (0..len).map(|i| b'a' + (i % 26) as u8).collect(),
                "application/octet-stream",
            ),
        }
    }
}

/// Binds the origin on `listen` and serves it in a task of its own until the
/// runtime stops; returns the address bound.
pub async fn start(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(serve);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo origin stopped");
        }
    });
    Ok(addr)
}

async fn serve(request: Request) -> Response {
    let path = request.uri().path();
    tracing::info!(%path, "origin request");
    let Some((_, object)) = OBJECTS.iter().find(|(p, _)| *p == path) else {
        let list: Vec<&str> = OBJECTS.iter().map(|(p, _)| *p).collect();
        return (
            StatusCode::NOT_FOUND,
            format!("no object {path}; try {}\n", list.join(", ")),
        )
            .into_response();
    };
    let (body, content_type) = object.body();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}
