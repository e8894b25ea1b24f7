//! The HTTP side of `memtrack serve`: hyper's HTTP/1 server on a one-thread
//! tokio runtime.
//!
//! Why hyper: it is the most used and most maintained HTTP implementation in
//! Rust, and its connections are tasks, not threads, so an idle client costs
//! a few hundred bytes and never holds up another one. tiny_http (lighter to
//! build) gives no way to set a socket timeout, so an idle connection would
//! keep one of its threads forever. Only the `http1` and `server` features,
//! and tokio's `rt`, `net`, `time`, `sync` and `macros`, are built.
//!
//! Every connection gets [`HEADER_TIMEOUT`] to send its request head and
//! [`CONNECTION_DEADLINE`] in all, after which it is dropped whatever it is
//! doing (a client that never reads its answer). At most
//! [`MAX_CONNECTIONS`] are served at once; further ones wait in the
//! kernel's accept queue until one ends. Scrapes themselves run under the
//! exporter's lock: a few microseconds of reading shared memory.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use super::{Exporter, Request, Response};

/// How long a client has, from connecting, to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may last in all (request, scrape, answer).
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// How long to wait before accepting again after `accept` failed (out of
/// file descriptors, typically), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `exporter` on `listener` until the process ends.
///
/// # Errors
/// The runtime cannot be built or the listener cannot be registered with it.
pub fn serve(listener: TcpListener, exporter: Exporter) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("memtrack serve: cannot start the HTTP runtime")?;
    listener.set_nonblocking(true)?;
    let exporter = Arc::new(Mutex::new(exporter));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("memtrack serve: accept: {error}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let exporter = exporter.clone();
            tokio::spawn(async move {
                serve_connection(stream, exporter).await;
                drop(slot);
            });
        }
    })
}

/// One connection, one request, within its deadlines.
async fn serve_connection(stream: tokio::net::TcpStream, exporter: Arc<Mutex<Exporter>>) {
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let answer = answer(&exporter, &request);
        async move { Ok::<_, std::convert::Infallible>(answer) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // One request per connection: a scraper connects anew each time
        // (cheap on a scrape interval of seconds), and no idle keep-alive
        // connection lingers.
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
        Ok(Ok(())) => {}
        // A client that sent garbage, hung up or was too slow: hyper has
        // answered what it could (400, 408); nothing to tell the operator.
        Ok(Err(_)) => {}
        Err(_) => {} // Past the deadline: dropping the future closes the socket.
    }
}

/// The HTTP answer to `request`.
fn answer(exporter: &Mutex<Exporter>, request: &hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let request = Request {
        method: request.method().as_str().to_owned(),
        target: request.uri().path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        accept: accept.to_ascii_lowercase(),
    };
    let Response { status, content_type, body } =
        exporter.lock().unwrap_or_else(|e| e.into_inner()).respond(&request);
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("the exporter's codes are valid");
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == 405 {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    // HEAD: hyper sends the head (with this body's Content-Length) only.
    response
}
