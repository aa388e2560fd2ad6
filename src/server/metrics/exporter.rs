//! The HTTP side of `--metrics ADDR`: `GET /metrics` answers the registry in
//! the Prometheus text format; any other path is 404, any other method 405.
//!
//! A scraper costs little and not for long: one request per connection (no
//! keep-alive), request headers within 8 KiB and 5 s, the whole exchange
//! within 10 s, and at most 4 connections served at once (further ones
//! wait in the listen backlog). It stops with the server's shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::Metrics;

/// The one path served.
const PATH: &str = "/metrics";
/// Connections served at once.
const MAX_SCRAPES: usize = 4;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one connection may take, request and answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes hyper buffers for a request (its headers must fit; hyper's minimum).
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Bind the metrics listener on `addr`. Must be called inside a tokio runtime.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Serve scrapes on `listener` until `stop` is cancelled; each connection
/// is a task of `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    debug!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (metrics, stop) = (Arc::clone(&metrics), stop.clone());
        tracker.spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = stop.cancelled() => {}
                () = serve_connection(stream, metrics) => {}
            }
        });
    }
}

/// Serve one connection: one request, within [`CONNECTION_DEADLINE`].
async fn serve_connection(stream: TcpStream, metrics: Arc<Metrics>) {
    let service = hyper::service::service_fn(move |request| respond(request, Arc::clone(&metrics)));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("metrics: connection failed: {e}"),
        Err(_elapsed) => debug!("metrics: connection over its deadline"),
    }
}

/// The answer to one request.
async fn respond(
    request: Request<Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != PATH {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: try /metrics\n"));
    }
    if request.method() != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    // Encoding reads the store: off the async workers.
    let encoded = tokio::task::spawn_blocking(move || metrics.encode()).await;
    Ok(match encoded {
        Ok(Ok(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(super::CONTENT_TYPE));
            response
        }
        _ => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
    })
}

/// A plain-text response with `status`.
fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
