//! The HTTP listeners: accepting connections, the connection cap, the header
//! and idle timeouts, and graceful shutdown.
//!
//! Owns every socket the HTTP server holds and how long it may hold it; what
//! a request gets is the router's business. Must never let a connection that
//! moves no bytes stay open without a deadline, and never block accept on a
//! refused connection.

use crate::metrics::METRICS;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// What one listener allows a connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From a connection's accept, or the first byte of a later request,
    /// until its head is complete.
    pub header_timeout: Duration,
    /// Between requests, or while a response waits for a reader that stopped.
    pub idle_timeout: Duration,
    /// A request in flight that moves no bytes: a blocking reload waits up to
    /// three target durations, so this is at least that.
    pub busy_timeout: Duration,
    /// Connections open at once; one more is refused at accept.
    pub max_connections: usize,
}

/// Connections past the cap that are still being told so. Past this many
/// they are closed without an answer, so that a flood costs nothing.
const REFUSALS_AT_ONCE: usize = 256;
/// How long a refused connection may take to read its 503 before the socket
/// is closed: closing with its request unread would reset the connection and
/// could discard the answer on the client's side.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Requests in flight when a shutdown begins get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// After an accept error (out of file descriptors, mostly), wait this long:
/// retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Read buffer of one connection. hyper's default (about 400 KB) would let
/// 16k slow clients pin gigabytes; a request head with a token fits in this.
const MAX_BUF: usize = 32 * 1024;

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 1\r\n\
Cache-Control: no-store\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 21\r\n\
Connection: close\r\n\
\r\n\
too many connections\n";

/// Serves `app` on `listener` (named `name` in metrics and logs) until
/// `shutdown` resolves, then lets requests in flight finish for a while.
pub async fn serve(
    listener: Arc<TcpListener>,
    name: &'static str,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    // HTTP/1.1: what players, CDNs and the WHIP clients speak to an origin.
    let mut builder = Builder::new();
    builder.max_buf_size(MAX_BUF);
    let builder = Arc::new(builder);
    // Each connection holds a receiver: the sender learns when all are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "HTTP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            METRICS
                .http_refused_connections
                .with_label_values(&[name, "too_many_connections"])
                .inc();
            if let Ok(linger) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(linger);
                });
            }
            continue;
        };
        // Playlists and parts are small writes that a player waits on.
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            app: app.clone(),
            limits,
            name,
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            METRICS.http_connections.with_label_values(&[name]).inc();
            conn.run(stream).await;
            METRICS.http_connections.with_label_values(&[name]).dec();
            drop(permit);
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, stop_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "HTTP connections still open after the shutdown grace"
        );
    }
}

/// Tells a connection past the cap to come back later, without reading it.
async fn refuse(mut stream: TcpStream) {
    // A fresh socket's send buffer is empty: this one write takes it all.
    if stream.try_write(REFUSAL).is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

struct Connection {
    builder: Arc<Builder>,
    app: Router,
    limits: Limits,
    name: &'static str,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        // Handlers that need the client's address (authorization hooks, the
        // per-viewer checks) read it as axum's `ConnectInfo`.
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            io: stream,
            activity: activity.clone(),
        });
        let service = {
            let activity = activity.clone();
            let inner = TowerToHyperService::new(self.app.clone());
            hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let request = InFlight::begin(activity.clone());
                let answer = hyper::service::Service::call(&inner, req);
                async move {
                    let res = answer.await;
                    drop(request);
                    res
                }
            })
        };
        let mut conn = pin!(self.builder.serve_connection(io, service).with_upgrades());
        let mut stopping = false;
        loop {
            let (deadline, reason) = activity.deadline(&self.limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(listener = self.name, error = %e, "HTTP connection");
                    }
                    return;
                }
                () = tokio::time::sleep_until(deadline) => {
                    // The deadline moves with every byte: close only if it
                    // still lies in the past.
                    if activity.deadline(&self.limits).0 <= Instant::now() {
                        METRICS
                            .http_timed_out_connections
                            .with_label_values(&[self.name, reason])
                            .inc();
                        return;
                    }
                }
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// When a connection last moved bytes and whether a request is in flight,
/// shared by its socket wrapper, its service and its deadline.
struct Activity {
    start: Instant,
    /// Nanoseconds after `start` of the last byte read or written, or of
    /// the last answer handed over.
    last: AtomicU64,
    /// Nanoseconds after `start`, plus one, since a request head began
    /// arriving and is not yet complete; 0 when none is.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            // A new connection owes its first head from the moment of accept.
            head_since: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.start + Duration::from_nanos(nanos)
    }

    fn read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// When this connection is to be closed if nothing changes, and why.
    fn deadline(&self, l: &Limits) -> (Instant, &'static str) {
        let last = self.at(self.last.load(Ordering::Relaxed));
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (last + l.busy_timeout, "idle_timeout");
        }
        match self.head_since.load(Ordering::Acquire) {
            0 => (last + l.idle_timeout, "idle_timeout"),
            since => (self.at(since - 1) + l.header_timeout, "header_timeout"),
        }
    }
}

/// One request between its complete head and its answer.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(0, Ordering::Release);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, noting each byte that moves.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(30),
            max_connections: 4,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_request_cycle() {
        let l = limits();
        let a = Arc::new(Activity::new());
        let t0 = a.start;
        assert_eq!(a.deadline(&l), (t0 + l.header_timeout, "header_timeout"));
        tokio::time::advance(Duration::from_secs(1)).await;
        a.read();
        // Bytes of the first head do not move its deadline.
        assert_eq!(a.deadline(&l).0, t0 + l.header_timeout);
        let req = InFlight::begin(a.clone());
        assert_eq!(
            a.deadline(&l),
            (a.at(a.now()) + l.busy_timeout, "idle_timeout")
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(req);
        let answered = Instant::now();
        assert_eq!(a.deadline(&l), (answered + l.idle_timeout, "idle_timeout"));
        tokio::time::advance(Duration::from_secs(10)).await;
        a.read();
        // The next head's first byte starts its header timeout.
        assert_eq!(
            a.deadline(&l),
            (Instant::now() + l.header_timeout, "header_timeout")
        );
    }
}
