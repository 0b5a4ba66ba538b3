//! The HTTP listeners: accepting connections, the connection cap, the header
//! and idle timeouts, TLS handshakes and HTTP/2 where ALPN picks it, and
//! graceful shutdown.
//!
//! Owns every socket the HTTP server holds and how long it may hold it; what
//! a request gets is the router's business, which certificate a handshake
//! gets is `tls.rs`'s. Must never let a connection that moves no bytes stay
//! open without a deadline (a TLS handshake included), and never block
//! accept on a refused connection.

use crate::metrics::{METRICS, TLS_METRICS};
use crate::serve::tls::{ALPN_H2, Tls};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// Requests one HTTP/2 connection may have in flight at once. A player has a
/// handful (blocking playlist reloads per rendition, a preload hint, a
/// segment); a page with several players shares one connection. Parked
/// requests still count against `http.max_blocked_requests` one by one,
/// whatever connection they came on.
const H2_MAX_STREAMS: u32 = 100;
/// What a client may send before the node reads it: request bodies here are
/// SDP offers and small API calls, so the HTTP/2 defaults (1 MB each) would
/// only let a connection pin memory.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// A refused TLS connection gets this long for its handshake and its 503.
const TLS_REFUSAL_DEADLINE: Duration = Duration::from_secs(2);

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 1\r\n\
Cache-Control: no-store\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 21\r\n\
Connection: close\r\n\
\r\n\
too many connections\n";

/// Serves `app` on `listener` (named `name` in metrics and logs) over plain
/// HTTP/1.1 until `shutdown` resolves, then lets requests in flight finish
/// for a while.
pub async fn serve(
    listener: Arc<TcpListener>,
    name: &'static str,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, name, app, limits, None, shutdown).await;
}

/// [`serve`], over HTTPS when `tls` is given: HTTP/2 where the client's ALPN
/// offers it, HTTP/1.1 otherwise, every limit the same as in plain HTTP.
pub async fn serve_tls(
    listener: Arc<TcpListener>,
    name: &'static str,
    app: Router,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let protocols = Arc::new(Protocols::new());
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
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => refuse(stream).await,
                        Some(tls) => refuse_tls(stream, &tls).await,
                    }
                    drop(linger);
                });
            }
            continue;
        };
        // Playlists and parts are small writes that a player waits on.
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            protocols: protocols.clone(),
            app: app.clone(),
            limits,
            name,
            tls: tls.clone(),
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

/// The connection settings of one listener, per protocol.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Self {
        // HTTP/1.1: what players, CDNs and the WHIP clients speak to an origin.
        let mut http1 = http1::Builder::new();
        http1.max_buf_size(MAX_BUF);
        // HTTP/2 (TLS with ALPN h2 only): what Safari needs for LL-HLS. No
        // keep-alive pings: the listener's own deadlines close idle and dead
        // connections, and a peer's ping answers would count as bytes moving
        // and keep an idle connection open forever.
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(MAX_BUF as u32)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW);
        Protocols { http1, http2 }
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

/// [`refuse`] on a TLS port: plain bytes would read as a broken handshake,
/// so the 503 goes through TLS, in the protocol the client picked. Bounded
/// by [`REFUSALS_AT_ONCE`] like the plain ones, and by a deadline.
async fn refuse_tls(stream: TcpStream, tls: &Tls) {
    let answer = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
        let res = hyper::Response::builder()
            .status(hyper::StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "1")
            .header("cache-control", "no-store")
            .header("content-type", "text/plain; charset=utf-8")
            .body(axum::body::Body::from("too many connections\n"))
            .unwrap_or_default();
        Ok::<_, Infallible>(res)
    });
    let _ = tokio::time::timeout(TLS_REFUSAL_DEADLINE, async {
        let Ok(io) = tls.acceptor().accept(stream).await else {
            return;
        };
        if io.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
            let mut conn = pin!(
                http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1)
                    .serve_connection(TokioIo::new(io), answer)
            );
            // GOAWAY at once: the requests the client sent with its preface
            // are answered, then the connection closes.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        } else {
            let _ = http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(io), answer)
                .await;
        }
    })
    .await;
}

struct Connection {
    protocols: Arc<Protocols>,
    app: Router,
    limits: Limits,
    name: &'static str,
    tls: Option<Tls>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        // Handlers that need the client's address (authorization hooks, the
        // per-viewer checks) read it as axum's `ConnectInfo`.
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let activity = Arc::new(Activity::new());
        // Under TLS too, so that handshake bytes and records count as bytes
        // moving, exactly as they do on the wire.
        let io = Watched {
            io: stream,
            activity: activity.clone(),
        };
        let service = service(&self.app, peer, &activity);
        let Some(tls) = self.tls.clone() else {
            let conn = self
                .protocols
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            self.drive(&activity, pin!(conn), |c| c.graceful_shutdown())
                .await;
            return;
        };
        let Some(io) = self.handshake(&tls, io, &activity).await else {
            return;
        };
        if io.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
            activity.multiplexed.store(true, Ordering::Release);
            let conn = self
                .protocols
                .http2
                .serve_connection(TokioIo::new(io), service);
            self.drive(&activity, pin!(conn), |c| c.graceful_shutdown())
                .await;
        } else {
            let conn = self
                .protocols
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            self.drive(&activity, pin!(conn), |c| c.graceful_shutdown())
                .await;
        }
    }

    /// The TLS handshake, due by the header timeout of accept like a first
    /// request head: a client that opens TCP and stops mid-handshake (or
    /// never starts it) is cut the same way, and its bytes do not move the
    /// deadline. `None`: the connection is over.
    async fn handshake(
        &mut self,
        tls: &Tls,
        io: Watched,
        activity: &Activity,
    ) -> Option<tokio_rustls::server::TlsStream<Watched>> {
        let (deadline, _) = activity.deadline(&self.limits);
        let accepted = tokio::select! {
            a = tokio::time::timeout_at(deadline, tls.acceptor().accept(io)) => a,
            // Shutting down: a connection that has not asked for anything
            // yet has nothing to finish.
            _ = self.stop.changed() => return None,
        };
        match accepted {
            Ok(Ok(io)) => Some(io),
            Ok(Err(e)) => {
                TLS_METRICS
                    .handshake_errors
                    .with_label_values(&[self.name, "error"])
                    .inc();
                tracing::debug!(listener = self.name, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                TLS_METRICS
                    .handshake_errors
                    .with_label_values(&[self.name, "timeout"])
                    .inc();
                METRICS
                    .http_timed_out_connections
                    .with_label_values(&[self.name, "header_timeout"])
                    .inc();
                None
            }
        }
    }

    /// Runs `conn` to its end, closing it when its deadline passes with no
    /// byte moved, and shutting it down gracefully when the listener stops.
    async fn drive<C>(
        &mut self,
        activity: &Activity,
        mut conn: Pin<&mut C>,
        graceful_shutdown: impl Fn(Pin<&mut C>),
    ) where
        C: Future<Output = Result<(), hyper::Error>>,
    {
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
                        graceful_shutdown(conn.as_mut());
                    }
                }
            }
        }
    }
}

/// The router as a hyper service for one connection: each request carries
/// the peer's address and counts as in flight until its answer is handed
/// over.
fn service(
    app: &Router,
    peer: SocketAddr,
    activity: &Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<axum::body::Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    let activity = activity.clone();
    let inner = TowerToHyperService::new(app.clone());
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
    /// HTTP/2: requests interleave with other frames (window updates,
    /// pings, settings), so a byte read between requests starts no header
    /// timeout. The first request is still due by the header timeout of
    /// accept; later heads are bounded in size (`max_header_list_size`),
    /// and a connection that moves no byte still meets the idle timeout.
    multiplexed: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            // A new connection owes its first head from the moment of accept.
            head_since: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            multiplexed: AtomicBool::new(false),
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
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.multiplexed.load(Ordering::Acquire)
        {
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
    // The `unwrap()`s below are the tests' own: on certificates, files and
    // loopback sockets each test makes itself. No peer's bytes reach them.
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

    mod tls {
        use super::*;
        use crate::serve::tls::tests::TestPki;
        use axum::extract::ConnectInfo;
        use axum::routing::get;

        /// Counts the `/park` handlers alive: one that the connection's end
        /// drops gives its place back.
        struct Parked(Arc<AtomicUsize>);
        impl Drop for Parked {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }

        fn app(parked: Arc<AtomicUsize>) -> Router {
            Router::new()
                .route(
                    "/peer",
                    get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                        peer.port().to_string()
                    }),
                )
                .route(
                    "/park",
                    get(move || async move {
                        parked.fetch_add(1, Ordering::SeqCst);
                        let _p = Parked(parked);
                        std::future::pending::<()>().await;
                        "never"
                    }),
                )
        }

        struct Server {
            addr: SocketAddr,
            stop: Option<tokio::sync::oneshot::Sender<()>>,
            task: tokio::task::JoinHandle<()>,
            parked: Arc<AtomicUsize>,
        }

        impl Server {
            async fn start(limits: Limits, tls: Option<Tls>) -> Server {
                let l = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
                let addr = l.local_addr().unwrap();
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let parked = Arc::new(AtomicUsize::new(0));
                let router = app(parked.clone());
                let task = tokio::spawn(serve_tls(l, "player", router, limits, tls, async {
                    let _ = rx.await;
                }));
                Server {
                    addr,
                    stop: Some(tx),
                    task,
                    parked,
                }
            }

            fn url(&self, path: &str) -> String {
                format!("https://localhost:{}{path}", self.addr.port())
            }

            async fn stop(mut self) {
                if let Some(tx) = self.stop.take() {
                    let _ = tx.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(15), &mut self.task).await;
            }
        }

        fn tls_limits() -> Limits {
            Limits {
                header_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_secs(10),
                busy_timeout: Duration::from_secs(10),
                max_connections: 16,
            }
        }

        fn client(pki: &TestPki, http1_only: bool) -> reqwest::Client {
            let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
            let b = reqwest::Client::builder()
                .tls_certs_only([ca])
                .no_proxy()
                .timeout(Duration::from_secs(20));
            let b = if http1_only { b.http1_only() } else { b };
            b.build().unwrap()
        }

        fn pki_and_tls() -> (TestPki, Tls) {
            let pki = TestPki::new();
            let (cfg, _) = pki.write_leaf("node");
            let tls = Tls::load(&cfg).unwrap().expect("enabled");
            (pki, tls)
        }

        /// Reads until the server closes; how long that took, or `None` if
        /// it had not after `within`.
        async fn closed_after(s: &mut TcpStream, within: Duration) -> Option<Duration> {
            let t0 = Instant::now();
            let mut buf = [0u8; 4096];
            tokio::time::timeout(within, async {
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await
            .ok()
            .map(|()| t0.elapsed())
        }

        #[tokio::test]
        async fn alpn_picks_h2_and_http11_clients_are_served_too() {
            let (pki, tls) = pki_and_tls();
            let srv = Server::start(tls_limits(), Some(tls)).await;
            let r = client(&pki, false)
                .get(srv.url("/peer"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), 200);
            let r = client(&pki, true)
                .get(srv.url("/peer"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_11);
            assert_eq!(r.status(), 200);
            // No plaintext on the TLS port.
            let plain = reqwest::Client::builder().no_proxy().build().unwrap();
            let url = format!("http://127.0.0.1:{}/peer", srv.addr.port());
            assert!(plain.get(url).send().await.is_err());
            srv.stop().await;
        }

        #[tokio::test]
        async fn a_silent_or_stalled_handshake_is_cut_by_the_header_timeout() {
            let (_pki, tls) = pki_and_tls();
            let limits = tls_limits();
            let srv = Server::start(limits, Some(tls)).await;
            let timeouts = || {
                TLS_METRICS
                    .handshake_errors
                    .with_label_values(&["player", "timeout"])
                    .get()
            };
            let before = timeouts();
            // Opens TCP and says nothing.
            let mut silent = TcpStream::connect(srv.addr).await.unwrap();
            // Starts a ClientHello (a TLS record header) and stops; then
            // trickles a byte now and then, which must not buy time.
            let mut stalled = TcpStream::connect(srv.addr).await.unwrap();
            stalled
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                .await
                .unwrap();
            let trickle = tokio::spawn(async move {
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if stalled.write_all(&[0x01]).await.is_err() {
                        break;
                    }
                }
                stalled
            });
            let took = closed_after(&mut silent, Duration::from_secs(10)).await;
            let took = took.expect("a silent client is closed");
            assert!(
                took >= limits.header_timeout - Duration::from_millis(50),
                "{took:?}"
            );
            let mut stalled = trickle.await.unwrap();
            // The trickle ran 2 s, four header timeouts: closed long before.
            assert!(
                closed_after(&mut stalled, Duration::from_millis(100))
                    .await
                    .is_some(),
                "a trickling handshake is closed"
            );
            assert!(timeouts() >= before + 2, "counted as handshake timeouts");
            srv.stop().await;
        }

        #[tokio::test]
        async fn h2_keeps_an_idle_connection_past_the_header_timeout() {
            // After its first request an HTTP/2 connection reads window
            // updates and settings between requests: they must not start a
            // header timeout, or every pause would cost a new handshake.
            let (pki, tls) = pki_and_tls();
            let srv = Server::start(tls_limits(), Some(tls)).await;
            let c = client(&pki, false);
            let first = c.get(srv.url("/peer")).send().await.unwrap();
            assert_eq!(first.version(), reqwest::Version::HTTP_2);
            let port = first.text().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let again = c.get(srv.url("/peer")).send().await.unwrap();
            assert_eq!(again.text().await.unwrap(), port, "the same connection");
            srv.stop().await;
        }

        #[tokio::test]
        async fn an_h2_connection_cut_by_its_deadline_drops_its_requests() {
            let (pki, tls) = pki_and_tls();
            let limits = Limits {
                busy_timeout: Duration::from_millis(700),
                ..tls_limits()
            };
            let srv = Server::start(limits, Some(tls)).await;
            let c = client(&pki, false);
            let parked: Vec<_> = (0..3)
                .map(|_| tokio::spawn(c.get(srv.url("/park")).send()))
                .collect();
            let all_parked = tokio::time::timeout(Duration::from_secs(5), async {
                while srv.parked.load(Ordering::SeqCst) < 3 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(
                all_parked.is_ok(),
                "three requests parked on one connection"
            );
            for p in parked {
                let r = tokio::time::timeout(Duration::from_secs(10), p)
                    .await
                    .expect("the connection is cut by the busy timeout")
                    .unwrap();
                assert!(r.is_err(), "{r:?}");
            }
            let released = tokio::time::timeout(Duration::from_secs(5), async {
                while srv.parked.load(Ordering::SeqCst) > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(
                released.is_ok(),
                "the handlers of a closed h2 connection are dropped"
            );
            srv.stop().await;
        }

        #[tokio::test]
        async fn connections_past_the_cap_get_503_through_tls() {
            let (pki, tls) = pki_and_tls();
            let limits = Limits {
                max_connections: 1,
                ..tls_limits()
            };
            let srv = Server::start(limits, Some(tls)).await;
            // The one place, held by a connection with a request in flight.
            let holder = client(&pki, false);
            let held = tokio::spawn(holder.get(srv.url("/park")).send());
            tokio::time::sleep(Duration::from_millis(300)).await;
            for http1_only in [false, true] {
                let r = client(&pki, http1_only)
                    .get(srv.url("/peer"))
                    .send()
                    .await
                    .expect("an answer through TLS");
                assert_eq!(r.status(), 503);
                assert_eq!(r.headers()["retry-after"], "1");
            }
            held.abort();
            srv.stop().await;
        }

        #[tokio::test]
        async fn plain_http_is_unchanged() {
            let srv = Server::start(tls_limits(), None).await;
            let plain = reqwest::Client::builder().no_proxy().build().unwrap();
            let url = format!("http://127.0.0.1:{}/peer", srv.addr.port());
            let r = plain.get(&url).send().await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_11);
            assert_eq!(r.status(), 200);
            srv.stop().await;
        }
    }
}
