//! The HTTP listener: accepts client connections and serves the router on each, within
//! limits that hold without configuration (hyper's settings where it has them):
//!
//! - a request's headers must arrive within [`HEADER_TIMEOUT`], and a keep-alive connection
//!   waiting for its next request is closed after as long (slowloris, idle sockets);
//! - headers are at most [`MAX_HEADER_BYTES`] (hyper answers 431);
//! - at most `[http] max_connections` at once (768 by default: well under the usual open-file
//!   limit of 1024, so idle sockets cannot starve the node's files and peer links): past that a connection is answered
//!   `503 too_many_connections` and closed, with a log line (at most one per few seconds);
//! - with TLS, the handshake must finish within [`HEADER_TIMEOUT`] too; plain HTTP to a TLS
//!   listener fails the handshake and is closed;
//! - on shutdown no new connection is taken and open ones finish their request.
//!
//! Body size and body time are checked where bodies are read (`kv.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::Service;

/// How long a client may take to send a request's headers, and to start the next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long open connections may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What a connection past the limit is told before it is closed.
fn too_many() -> String {
    let body = r#"{"error":"too_many_connections","message":"the node is at its client connection limit; try again"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` resolves, then
/// drains open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    tls: Option<TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut last_refusal_log: Option<Instant> = None;
    let mut refused_unlogged = 0u64;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES);
    tokio::pin!(stop);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused_unlogged += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                tracing::warn!(%addr, max_connections, refused = refused_unlogged,
                    "client connection limit reached; refusing new connections");
                last_refusal_log = Some(Instant::now());
                refused_unlogged = 0;
            }
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stream.write_all(too_many().as_bytes()),
                )
                .await;
            });
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (router, builder, watcher, tls) = (
            app.clone(),
            builder.clone(),
            graceful.watcher(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let served = match tls {
                None => serve_one(&builder, watcher, stream, router).await,
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(secure)) => serve_one(&builder, watcher, secure, router).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%addr, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Serves one connection until it closes, under the shutdown watcher.
async fn serve_one<S>(
    builder: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    stream: S,
    router: Router,
) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        router.clone().call(request)
    });
    watcher
        .watch(builder.serve_connection(TokioIo::new(stream), service))
        .await
}
