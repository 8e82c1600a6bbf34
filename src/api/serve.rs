//! The HTTP listener, hardened: what `axum::serve` does (HTTP/1.1 and HTTP/2 on one port,
//! graceful shutdown), plus the edges a hostile or broken client reaches first:
//!
//! - **a connection cap** (`--max-connections`): past it, the listener stops accepting and
//!   connections wait in the kernel's backlog, so a flood costs no memory in the process;
//! - **a header-read timeout** (`--header-timeout-ms`): a connection that does not deliver a
//!   request's headers in time is closed. With HTTP/1.1 keep-alive the wait for the *next*
//!   request counts too, so it is also the idle timeout: 900 idle half-open connections are
//!   closed after it instead of being held for ever;
//! - **a body-read timeout** (`--body-timeout-ms`): a request body that stops sending for this
//!   long is cut off (tower-http's per-frame body timeout); the sync body is also bounded by
//!   the request's deadline.
//!
//! Built on hyper-util's server parts (the ones `axum::serve` uses), because `axum::serve` has
//! no header timeout or connection cap.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The listener's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// Time to receive a request's headers (and, between keep-alive requests, the idle limit).
    pub header_timeout: Duration,
    /// Longest pause while a request body is read.
    pub body_timeout: Duration,
    /// How long shutdown waits for open connections to finish their requests.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(120),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits (up to
/// the grace period) for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("ocr_http_open_connections").increment(1.0);
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            metrics::gauge!("ocr_http_open_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}
