//! The RTMP listener: the only RTMP code that touches sockets. One task per connection moves
//! bytes between the socket and a `PublishSession` and events from it to the hub. It never
//! logs a stream key.

use super::session::{PublishSession, RtmpError, SessionEvent};
use crate::hub::{Hub, PublishError, Publisher};
use crate::media::Arrival;
use crate::metrics::METRICS;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};

const INGEST: &str = "rtmp";
/// From accept to an accepted publish: handshake, connect, createStream, publish. A real
/// encoder needs well under a second; a truncated handshake or an idle socket is closed.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// A publishing encoder sends media continuously; this much silence means it is gone
/// (a vanished peer may never send FIN).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that does not read our few control messages within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// One read's worth. The session buffers at most one partial RTMP message beyond this
/// (bounded by `guard::MAX_PENDING_BYTES`).
const READ_BUFFER: usize = 64 * 1024;
/// How long a refused peer gets to read the refusal and hang up.
const LINGER: Duration = Duration::from_secs(2);
/// Back-off after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts RTMP publishers on `listener` forever, at most `max_connections`
/// at once.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, max_connections: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Dropping the socket closes it: nothing is read or buffered.
                    tracing::warn!(%peer, limit = max_connections,
                        "rtmp: connection refused: too many connections");
                    reject("too_many_connections");
                    continue;
                };
                let hub = hub.clone();
                tokio::spawn(async move {
                    connection(socket, peer, hub).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "rtmp: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// What the peer is told when its publish is refused: enough for the person at the encoder,
/// nothing about our internals.
fn peer_description(e: &PublishError) -> &'static str {
    match e {
        PublishError::UnknownKey => "unknown stream key",
        PublishError::AlreadyLive(_) => "this channel already has a publisher",
        PublishError::Registry(_) | PublishError::Channel { .. } | PublishError::Spawn { .. } => {
            "internal error, try again later"
        }
    }
}

/// Why a connection ended, for one log line at the end.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("no publish within {PUBLISH_DEADLINE:?}")]
    NoPublish,
    #[error("no data for {IDLE_TIMEOUT:?}")]
    Idle,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer does not read")]
    WriteTimeout,
    #[error(transparent)]
    Rtmp(#[from] RtmpError),
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
    session: PublishSession,
    /// The hub counts it in `publishers{ingest}`; dropping it ends the publish.
    live: Option<Publisher>,
}

async fn connection(socket: TcpStream, peer: SocketAddr, hub: Arc<Hub>) {
    // Small control messages must not wait for Nagle during the handshake.
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "rtmp: set_nodelay failed");
    }
    tracing::debug!(%peer, "rtmp: connection");
    let mut conn = Connection {
        socket,
        peer,
        hub,
        session: PublishSession::new(),
        live: None,
    };
    let result = conn.run().await;
    let channel = conn.channel_id();
    let dropped = conn.session.dropped_before_config();
    match result {
        Ok(()) => {
            tracing::info!(%peer, %channel, dropped_before_config = dropped, "rtmp: connection closed")
        }
        Err(ConnError::Rtmp(e)) => match e.unsupported_codec() {
            Some(codec) => {
                tracing::warn!(%peer, %channel, codec, "rtmp: unsupported codec, closing");
                reject("unsupported_codec");
                if let Some(p) = &conn.live {
                    p.refuse();
                }
            }
            None => {
                tracing::info!(%peer, %channel, error = %e, "rtmp: session error, closing");
                reject(match e {
                    RtmpError::Handshake(_) => "bad_handshake",
                    _ => "protocol_error",
                });
            }
        },
        Err(e @ ConnError::NoPublish) => {
            tracing::info!(%peer, %channel, error = %e, "rtmp: connection ended");
            reject("no_publish_timeout");
        }
        Err(e) => tracing::info!(%peer, %channel, error = %e, "rtmp: connection ended"),
    }
    // `conn` drops here: the publisher (if any) and the gauge go with it.
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
        let publish_deadline = Instant::now() + PUBLISH_DEADLINE;
        loop {
            let read = if self.live.is_some() {
                timeout(IDLE_TIMEOUT, self.socket.read(&mut buf))
                    .await
                    .map_err(|_| ConnError::Idle)?
            } else {
                timeout_at(publish_deadline, self.socket.read(&mut buf))
                    .await
                    .map_err(|_| ConnError::NoPublish)?
            };
            let n = read?;
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
                    live.send(media, arrival);
                }
            }
            SessionEvent::ConnectRefused { app } => {
                tracing::info!(peer = %self.peer, ?app, "rtmp: refused unknown application");
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
        match self.hub.start_publish(stream_key, INGEST) {
            Ok(publisher) => {
                let live = publisher;
                tracing::info!(peer = %self.peer, channel = %live.channel_id(), "rtmp: publishing");
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
                tracing::warn!(peer = %self.peer, %channel, reason = e.reason(), error = %e, "rtmp: publish refused");
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
        timeout(WRITE_TIMEOUT, self.socket.write_all(&bytes))
            .await
            .map_err(|_| ConnError::WriteTimeout)??;
        Ok(())
    }
}
