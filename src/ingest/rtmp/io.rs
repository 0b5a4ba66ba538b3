//! The RTMP listener: the only RTMP code that touches sockets. One task per connection moves
//! bytes between the socket and a `PublishSession` and events from it to the hub, and writes
//! the hub's reconnect requests to a publisher that can take them. It never logs a stream key,
//! and logs what any peer can trigger (refusals, errors) within a [`LogBudget`].

use super::session::{PublishSession, RtmpError, SessionEvent};
use crate::config::{Config, ConfigError};
use crate::hooks::{Decision, Hooks, PublishQuestion, key_id};
use crate::hub::{Hub, PublishError, Publisher, ReconnectRequest};
use crate::logging::LogBudget;
use crate::media::Arrival;
use crate::metrics::METRICS;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};

const INGEST: &str = "rtmp";
/// A publishing encoder sends media continuously; this much silence means it is gone
/// (a vanished peer may never send FIN).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that does not read our few control messages within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// One read's worth. The session buffers at most one partial RTMP message beyond this
/// (bounded by `guard::MAX_PENDING_BYTES`, and by `guard::MAX_UNAUTHENTICATED_MESSAGE_BYTES`
/// before a publish is accepted).
const READ_BUFFER: usize = 64 * 1024;
/// How long a refused peer gets to read the refusal and hang up.
const LINGER: Duration = Duration::from_secs(2);
/// Back-off after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Log budgets of the lines a peer can trigger: each site writes a burst, then one line per
/// window saying how many it held back (the metrics count every one).
static REFUSED_AT_ACCEPT: LogBudget = LogBudget::new(10, Duration::from_secs(10));
static ACCEPT_FAILED: LogBudget = LogBudget::new(5, Duration::from_secs(10));
static CONNECTION_ERROR: LogBudget = LogBudget::new(20, Duration::from_secs(10));
static CLOSED_UNPUBLISHED: LogBudget = LogBudget::new(10, Duration::from_secs(10));
static UNKNOWN_APP: LogBudget = LogBudget::new(10, Duration::from_secs(10));
static PUBLISH_REFUSED: LogBudget = LogBudget::new(20, Duration::from_secs(10));

/// What the listener enforces on every peer before and while it publishes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one [`AddressKey`].
    pub max_per_address: usize,
    /// From accept to an accepted publish: handshake, connect, createStream, publish.
    pub auth_timeout: Duration,
}

impl Limits {
    /// The `[ingest]` limits of a validated configuration.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        Ok(Limits {
            max_connections: cfg.ingest.max_connections,
            max_per_address: cfg.ingest.max_connections_per_address,
            auth_timeout: cfg.auth_timeout()?,
        })
    }
}

/// What one client counts as for the per-address limit: its IPv4 address, or the /64 of its
/// IPv6 address (one host is given a whole /64 and can pick any address in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => AddressKey::V6Prefix((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Open connections per client address. A slot frees its count when dropped.
#[derive(Default)]
pub struct AddressTable {
    open: Mutex<HashMap<AddressKey, usize>>,
}

/// One connection's place in its address's count.
pub struct AddressSlot {
    table: Arc<AddressTable>,
    key: AddressKey,
}

impl AddressTable {
    /// Counts a connection from `ip`, unless `limit` are open from its address already.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let key = AddressKey::of(ip);
        // A poisoned lock only means a thread panicked between two integer updates.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }

    /// Addresses with a connection open (so the table never outgrows the connections).
    pub fn addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Accepts RTMP publishers on `listener` forever, within `limits`.
pub async fn serve(listener: Arc<TcpListener>, hub: Arc<Hub>, limits: Limits, hooks: Arc<Hooks>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let addresses = Arc::new(AddressTable::default());
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                // Dropping the socket closes it: nothing is read or buffered.
                let Some(address_slot) = addresses.try_take(peer.ip(), limits.max_per_address)
                else {
                    refused_at_accept(
                        peer,
                        "too_many_connections_per_address",
                        limits.max_per_address,
                    );
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refused_at_accept(peer, "too_many_connections", limits.max_connections);
                    continue;
                };
                let (hub, hooks) = (hub.clone(), hooks.clone());
                tokio::spawn(async move {
                    connection(socket, peer, hub, hooks, limits.auth_timeout).await;
                    drop((slot, address_slot));
                });
            }
            Err(e) => {
                if let Some(held) = ACCEPT_FAILED.admit_now() {
                    tracing::warn!(error = %e, held_back = held, "rtmp: accept failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn refused_at_accept(peer: SocketAddr, reason: &'static str, limit: usize) {
    reject(reason);
    if let Some(held) = REFUSED_AT_ACCEPT.admit_now() {
        tracing::warn!(%peer, limit, reason, held_back = held, "rtmp: connection refused: {}", reason.replace('_', " "));
    }
}

/// What the peer is told when its publish is refused: enough for the person at the encoder,
/// nothing about our internals.
fn peer_description(e: &PublishError) -> &'static str {
    match e {
        PublishError::UnknownKey => "unknown stream key",
        PublishError::AlreadyLive(_) => "this channel already has a publisher",
        PublishError::Draining => "this node is shutting down: publish to another node",
        PublishError::AtCapacity => "this node is full: publish to another node",
        PublishError::Registry(_)
        | PublishError::Channel { .. }
        | PublishError::Spawn { .. }
        | PublishError::Interrupted => "internal error, try again later",
    }
}

/// Why a connection ended, for one log line at the end.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("no publish within {0:?} of connecting (ingest.auth_timeout_s)")]
    NoPublish(Duration),
    #[error("no data for {IDLE_TIMEOUT:?}")]
    Idle,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer does not read")]
    WriteTimeout,
    #[error(transparent)]
    Rtmp(#[from] RtmpError),
    /// The hub cut this publisher (counted and logged there).
    #[error("publisher cut off: {0}")]
    Cut(#[from] crate::hub::Cut),
}

enum Next {
    Continue,
    /// The connection's job is over (publish finished, refused, or peer closed).
    Close,
}

struct Connection {
    socket: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    hooks: Arc<Hooks>,
    auth_timeout: Duration,
    /// Until a publish is accepted, every wait ends here.
    auth_deadline: Instant,
    session: PublishSession,
    /// The hub counts it in `publishers{ingest}`; dropping it ends the publish.
    live: Option<Publisher>,
    /// The hub's reconnect requests, once publishing, for a publisher that announced capsEx
    /// Reconnect.
    reconnect: Option<watch::Receiver<Option<ReconnectRequest>>>,
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    hooks: Arc<Hooks>,
    auth_timeout: Duration,
) {
    // Small control messages must not wait for Nagle during the handshake.
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "rtmp: set_nodelay failed");
    }
    tracing::debug!(%peer, "rtmp: connection");
    let mut conn = Connection {
        socket,
        peer,
        hub,
        hooks,
        auth_timeout,
        auth_deadline: Instant::now() + auth_timeout,
        session: PublishSession::new(),
        live: None,
        reconnect: None,
    };
    let result = conn.run().await;
    let channel = conn.channel_id();
    let dropped = conn.session.dropped_before_config();
    match result {
        Ok(()) if conn.live.is_some() => {
            tracing::info!(%peer, %channel, dropped_before_config = dropped, "rtmp: connection closed")
        }
        Ok(()) => {
            if let Some(held) = CLOSED_UNPUBLISHED.admit_now() {
                tracing::info!(%peer, held_back = held, "rtmp: connection closed before publishing")
            }
        }
        Err(e) => {
            let reason = match &e {
                ConnError::Rtmp(e) if e.unsupported_codec().is_some() => {
                    if let Some(p) = &conn.live {
                        p.refuse();
                    }
                    Some("unsupported_codec")
                }
                ConnError::Rtmp(RtmpError::Handshake(_)) => Some("bad_handshake"),
                ConnError::Rtmp(e) => Some(e.limit().unwrap_or("protocol_error")),
                ConnError::NoPublish(_) => Some("no_publish_timeout"),
                // Counted as `rungs_ingest_cut_total` by the hub.
                ConnError::Idle
                | ConnError::Io(_)
                | ConnError::WriteTimeout
                | ConnError::Cut(_) => None,
            };
            if let Some(reason) = reason {
                reject(reason);
            }
            if let Some(held) = CONNECTION_ERROR.admit_now() {
                let codec = match &e {
                    ConnError::Rtmp(r) => r.unsupported_codec(),
                    _ => None,
                };
                match codec {
                    Some(codec) => {
                        tracing::warn!(%peer, %channel, codec, held_back = held, "rtmp: unsupported codec, closing")
                    }
                    None => {
                        tracing::info!(%peer, %channel, reason = reason.unwrap_or("-"), error = %e, held_back = held, "rtmp: connection ended")
                    }
                }
            }
        }
    }
    // `conn` drops here: the publisher (if any) and the gauge go with it.
}

/// The next reconnect request for this connection; never resolves for a publisher that cannot
/// be asked, or once the hub has let go of the sender (the publish is ending).
async fn next_reconnect(
    requests: &mut Option<watch::Receiver<Option<ReconnectRequest>>>,
) -> Option<ReconnectRequest> {
    let Some(rx) = requests else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        return std::future::pending().await;
    }
    rx.borrow_and_update().clone()
}

/// Counts a connection refused or cut off for what the peer sent.
fn reject(reason: &'static str) {
    METRICS
        .ingest_rejected
        .with_label_values(&[INGEST, reason])
        .inc();
}

impl Connection {
    /// The channel id for log lines, `-` before a publish was accepted.
    fn channel_id(&self) -> String {
        self.live
            .as_ref()
            .map_or_else(|| "-".to_string(), |l| l.channel_id().to_string())
    }

    async fn run(&mut self) -> Result<(), ConnError> {
        let mut buf = vec![0u8; READ_BUFFER].into_boxed_slice();
        loop {
            let live = self.live.is_some();
            let deadline = if live {
                Instant::now() + IDLE_TIMEOUT
            } else {
                self.auth_deadline
            };
            // Both branches are cancel-safe: a read that loses the race has read nothing.
            let read = tokio::select! {
                read = timeout_at(deadline, self.socket.read(&mut buf)) => read,
                Some(request) = next_reconnect(&mut self.reconnect) => {
                    self.send_reconnect_request(request).await?;
                    continue;
                }
            };
            let n = match read {
                Ok(read) => read?,
                Err(_) if live => return Err(ConnError::Idle),
                Err(_) => return Err(ConnError::NoPublish(self.auth_timeout)),
            };
            if n == 0 {
                tracing::debug!(peer = %self.peer, "rtmp: closed by peer");
                return Ok(());
            }
            // The media in these bytes arrived now, whatever the parsing costs.
            let arrival = Arrival::now();
            let events = self.session.feed(&buf[..n])?;
            for event in events {
                if let Next::Close = self.on_event(event, arrival).await? {
                    return Ok(());
                }
            }
        }
    }

    async fn on_event(&mut self, event: SessionEvent, arrival: Arrival) -> Result<Next, ConnError> {
        match event {
            SessionEvent::Send(bytes) => self.send(bytes).await?,
            SessionEvent::Media(media) => {
                // The session yields media only after accept_publish, so `live` is set.
                if let Some(live) = &self.live {
                    live.send(media, arrival)?;
                }
            }
            SessionEvent::ConnectRefused { app } => {
                if let Some(held) = UNKNOWN_APP.admit_now() {
                    tracing::info!(peer = %self.peer, ?app, held_back = held, "rtmp: refused unknown application");
                }
                reject("unknown_app");
                self.linger().await;
                return Ok(Next::Close);
            }
            SessionEvent::PublishRequested { app: _, stream_key } => {
                return self.on_publish(&stream_key).await;
            }
            SessionEvent::PublishFinished => {
                tracing::info!(peer = %self.peer, channel = %self.channel_id(), "rtmp: publish finished");
                return Ok(Next::Close);
            }
        }
        Ok(Next::Continue)
    }

    async fn on_publish(&mut self, stream_key: &str) -> Result<Next, ConnError> {
        if !self.hook_allows(stream_key).await {
            reject("hook_denied");
            if let Some(held) = PUBLISH_REFUSED.admit_now() {
                tracing::warn!(peer = %self.peer, reason = "hook_denied", held_back = held, "rtmp: publish refused by the authorization hook");
            }
            for event in self.session.refuse_publish("publish not authorized")? {
                if let SessionEvent::Send(bytes) = event {
                    self.send(bytes).await?;
                }
            }
            self.linger().await;
            return Ok(Next::Close);
        }
        let started = {
            let key = stream_key.to_string();
            crate::ingest::off_async(&self.hub, move |hub| hub.start_publish(&key, INGEST)).await
        };
        match started.unwrap_or(Err(PublishError::Interrupted)) {
            Ok(publisher) => {
                let live = publisher;
                let caps = self.session.publisher_caps();
                tracing::info!(
                    peer = %self.peer,
                    channel = %live.channel_id(),
                    caps_ex = caps.caps_ex,
                    fourcc_list = ?caps.fourcc_list,
                    "rtmp: publishing"
                );
                // Listening before the publish is answered: once the publisher reads
                // NetStream.Publish.Start, the hub can reach it.
                if caps.reconnect() {
                    self.reconnect = Some(live.reconnect_requests());
                }
                self.live = Some(live);
                for event in self.session.accept_publish()? {
                    if let SessionEvent::Send(bytes) = event {
                        self.send(bytes).await?;
                    }
                }
                Ok(Next::Continue)
            }
            Err(e) => {
                let channel = match &e {
                    PublishError::AlreadyLive(id) => id.as_str(),
                    _ => "-",
                };
                // `e`'s message never contains the key (hub's contract).
                if let Some(held) = PUBLISH_REFUSED.admit_now() {
                    tracing::warn!(peer = %self.peer, %channel, reason = e.reason(), error = %e, held_back = held, "rtmp: publish refused");
                }
                reject(e.reason());
                for event in self.session.refuse_publish(peer_description(&e))? {
                    if let SessionEvent::Send(bytes) = event {
                        self.send(bytes).await?;
                    }
                }
                self.linger().await;
                Ok(Next::Close)
            }
        }
    }

    /// Asks the operator's backend, when a publish hook is configured, about
    /// the channel this key belongs to. An unknown key is left to the hub,
    /// which refuses it without asking anyone.
    async fn hook_allows(&self, stream_key: &str) -> bool {
        if !self.hooks.has_publish_hook() {
            return true;
        }
        let found = {
            let key = stream_key.to_string();
            crate::ingest::off_async(&self.hub, move |hub| hub.registry().find_by_key(&key)).await
        };
        let Some(Ok(Some(channel))) = found else {
            return true;
        };
        let q = PublishQuestion {
            channel: &channel.id,
            protocol: INGEST,
            client: self.peer.ip(),
            key_id: key_id(stream_key),
        };
        self.hooks.publish(&q).await == Decision::Allow
    }

    /// Writes a reconnect request from the hub. A request the session cannot send now (the
    /// publish just finished) or whose tcUrl it refuses is logged and dropped: the connection
    /// goes on either way.
    async fn send_reconnect_request(&mut self, request: ReconnectRequest) -> Result<(), ConnError> {
        let channel = self.channel_id();
        // The tcUrl is the operator's, but it is not logged: a URL may carry a token.
        let new_server = request.tc_url.is_some();
        match self.session.reconnect_request(request.tc_url.as_deref()) {
            Ok(Some(bytes)) => {
                tracing::info!(peer = %self.peer, %channel, new_server, "rtmp: asked the publisher to reconnect");
                self.send(bytes).await
            }
            Ok(None) => {
                tracing::debug!(peer = %self.peer, %channel, "rtmp: not publishing, reconnect request dropped");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, %channel, error = %e, "rtmp: reconnect request not sent");
                Ok(())
            }
        }
    }

    /// Lets a refusal reach the peer before the socket closes: closing with unread input
    /// sends a RST, which can discard the refusal before the peer's client reads it.
    async fn linger(&mut self) {
        if self.socket.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        let _ = timeout(LINGER, async {
            while matches!(self.socket.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), ConnError> {
        let write_deadline = Instant::now() + WRITE_TIMEOUT;
        // Before the publish, a peer that does not read is held to the auth deadline too.
        let (deadline, expired) = if self.live.is_none() && self.auth_deadline < write_deadline {
            (self.auth_deadline, ConnError::NoPublish(self.auth_timeout))
        } else {
            (write_deadline, ConnError::WriteTimeout)
        };
        timeout_at(deadline, self.socket.write_all(&bytes))
            .await
            .map_err(|_| expired)??;
        Ok(())
    }
}
