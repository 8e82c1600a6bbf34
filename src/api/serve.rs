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
//!   long is cut off (tower-http's per-frame body timeout);
//! - **a minimum body rate** (`--body-min-rate`): the per-frame timeout restarts with every
//!   frame, so one byte every 29 s would hold a slot for ever. After a grace period (the body
//!   timeout), a body must have arrived at this many bytes per second on average since the
//!   request began, or it is cut off ([`MinRateBody`]): a whole-body deadline that grows with
//!   what was sent, so a large upload on a slow link passes and a trickle does not;
//! - **HTTP/2 streams**: at most [`HTTP2_MAX_STREAMS`] concurrent requests per connection, so
//!   the connection cap bounds requests too.
//!
//! Built on hyper-util's server parts (the ones `axum::serve` uses), because `axum::serve` has
//! no header timeout or connection cap.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

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
    /// Slowest average body rate accepted after the first `body_timeout` (bytes per second;
    /// 0: no minimum).
    pub body_min_rate: u64,
}

/// The peer address of a request's connection (in the request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Concurrent HTTP/2 streams per connection (hyper's default is 200, which would multiply the
/// connection cap by 200). Clients that need more parallelism open more connections, which
/// the cap counts.
pub const HTTP2_MAX_STREAMS: u32 = 16;

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(120),
            body_min_rate: 16 << 10,
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
    let (grace, min_rate) = (limits.body_timeout, limits.body_min_rate);
    let router = router
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_timeout,
        ))
        .layer(axum::middleware::map_request(
            move |req: axum::extract::Request| async move {
                if min_rate == 0 {
                    return req;
                }
                req.map(|b| Body::new(MinRateBody::new(b, grace, min_rate)))
            },
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
        .keep_alive_timeout(limits.header_timeout)
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
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
        let (stream, peer) = tokio::select! {
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
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                req
            },
        ));
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

/// A request body that must keep an average rate: after `grace`, the bytes received since the
/// request began must be at least `min_rate` per second of the time past `grace`. The deadline
/// moves with every frame (`begin + grace + received / min_rate`); a timer wakes the body when
/// it passes, so a body that sends nothing more is cut too.
pub struct MinRateBody {
    inner: Body,
    begin: Instant,
    grace: Duration,
    min_rate: u64,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

/// The error of a body cut for being too slow.
#[derive(Debug)]
pub struct BodyTooSlow {
    pub min_rate: u64,
}

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body arrived slower than {} bytes per second",
            self.min_rate
        )
    }
}

impl std::error::Error for BodyTooSlow {}

impl MinRateBody {
    pub fn new(inner: Body, grace: Duration, min_rate: u64) -> Self {
        let begin = Instant::now();
        Self {
            inner,
            begin,
            grace,
            min_rate: min_rate.max(1),
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(begin + grace)),
        }
    }

    fn deadline(&self) -> Instant {
        self.begin
            + self.grace
            + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64)
    }
}

impl HttpBody for MinRateBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.received += d.len() as u64;
                    let at = self.deadline();
                    self.timer.as_mut().reset(at);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_ready() {
                    metrics::counter!("ocr_http_slow_bodies_total").increment(1);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow {
                        min_rate: self.min_rate,
                    }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
