//! `/metrics`, `/healthz`, `/readyz` over HTTP/1.1 (hyper), on a thread and a single-threaded
//! runtime of their own: the consumer's runtime can be saturated, paused for memory or busy
//! reconnecting, and the scrape and the probes still answer.
//!
//! Cheap by construction: a bounded number of connections at once, a header read timeout,
//! and a `/metrics` body of a fixed series count (see [`super::names`]). When the address
//! cannot be bound (the port is taken) the consumer keeps consuming and the endpoint keeps
//! trying to bind every few seconds, saying so in the log each time it fails.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::health::health;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection, however slow, lives longer than this.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How often histograms are drained and the recorder's upkeep runs. Samples wait in a
/// lock-free buffer until then (8 bytes each): at 100,000 messages a second, a one-second
/// period bounds that buffer to under 2 MB for both histograms.
const UPKEEP_PERIOD: Duration = Duration::from_secs(1);
/// How long between attempts to bind a taken address.
const REBIND_PERIOD: Duration = Duration::from_secs(5);

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Starts the endpoint's thread. Returns once the first attempt to bind is done: the bound
/// address (port 0 resolved), or why it could not bind (the thread then keeps trying).
pub fn spawn(addr: SocketAddr, handle: PrometheusHandle) -> io::Result<SocketAddr> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("logfence-metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(serve(addr, handle, tx));
        })?;
    rx.recv()
        .unwrap_or_else(|_| Err(io::Error::other("the metrics thread ended at start")))
}

async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    first_bind: mpsc::SyncSender<io::Result<SocketAddr>>,
) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(UPKEEP_PERIOD);
        loop {
            ticker.tick().await;
            upkeep.run_upkeep();
        }
    });
    let listener = bind(addr, first_bind).await;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handle = Arc::new(handle);
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = Arc::clone(&handle);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handle = Arc::clone(&handle);
                async move { Ok::<_, Infallible>(respond(&req, &handle)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

/// Binds, retrying every [`REBIND_PERIOD`] until it can; tells the starter how the first
/// attempt went.
async fn bind(
    addr: SocketAddr,
    first_bind: mpsc::SyncSender<io::Result<SocketAddr>>,
) -> TcpListener {
    let mut first = Some(first_bind);
    loop {
        let attempt = TcpListener::bind(addr).await;
        let report = match &attempt {
            Ok(l) => l.local_addr(),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match first.take() {
            Some(tx) => {
                let _ = tx.send(report);
            }
            None => match &report {
                Ok(bound) => tracing::info!(addr = %bound, "metrics endpoint listening at last"),
                Err(e) => tracing::debug!(%addr, error = %e, "metrics endpoint: still cannot bind"),
            },
        }
        if let Ok(listener) = attempt {
            return listener;
        }
        tokio::time::sleep(REBIND_PERIOD).await;
    }
}

fn respond(req: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let response = match req.uri().path() {
        "/metrics" => {
            super::metrics().sample_memory();
            let mut r = Response::new(Full::new(Bytes::from(handle.render())));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let readiness = health().readiness();
            let status = if readiness.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, readiness.text())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz\n",
        ),
    };
    if req.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
