//! The WHIP UDP socket: one tokio task owns it and every session's sans-IO
//! state, routes each datagram to its session by source address (or by ICE
//! credentials for a new address), and wakes each session when its timer is
//! due. The only WHIP code that touches the socket.

use super::media::{MediaMsg, MediaThread};
use super::session::{End, Session, SessionTiming, Transmit};
use crate::hub::Publisher;
use crate::logging::LogBudget;
use crate::media::Arrival;
use crate::metrics::METRICS;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use str0m::Rtc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Frames queued between a session and its media thread (about 2 s of
/// 30 fps video with its audio); a full queue drops and asks for an IDR.
const MEDIA_QUEUE: usize = 256;
/// Largest datagram read; WebRTC stays under the path MTU.
const MAX_DATAGRAM: usize = 2048;
/// A failing peer's DTLS or SRTP ends its session with one line; many such
/// peers share this budget.
static SESSION_FAILED: LogBudget = LogBudget::new(10, Duration::from_secs(10));
/// How long the task sleeps with no session to wake.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// What a running node needs to set up WHIP sessions.
#[derive(Clone, Debug)]
pub struct WhipSettings {
    pub timing: SessionTiming,
    pub max_sessions: usize,
    pub audio_bps: u64,
}

/// The node's WHIP side: the UDP task's mailbox and the table of sessions
/// the HTTP handlers consult.
pub struct Whip {
    pub(super) settings: WhipSettings,
    /// Host candidates every answer announces.
    pub(super) candidates: Vec<SocketAddr>,
    commands: mpsc::Sender<Command>,
    /// Session id to channel id, for DELETE and the session cap.
    sessions: Arc<Mutex<HashMap<String, String>>>,
}

/// A place under `whip.max_sessions`, taken before the offer is negotiated and given back on
/// drop unless [`Whip::start_session`] turns it into a session. The check and the taking
/// are one step under the table's lock, so concurrent POSTs cannot pass the cap together.
pub struct Reservation {
    sessions: Arc<Mutex<HashMap<String, String>>>,
    id: String,
    started: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.started {
            lock(&self.sessions).remove(&self.id);
        }
    }
}

pub(super) enum Command {
    Start {
        id: String,
        channel: String,
        rtc: Box<Rtc>,
        media: crossbeam_channel::Sender<MediaMsg>,
    },
    Stop {
        id: String,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Room for session starts and stops waiting for the UDP task, which takes
/// them between two datagrams: only a wedged task fills it.
const COMMAND_QUEUE: usize = 64;

/// Why a negotiated session could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting the media thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the WHIP UDP task is not taking new sessions")]
    Busy,
}

impl Whip {
    /// Binds the UDP socket and starts its task. `ips`: the addresses to
    /// announce; empty means every local address of the socket's family.
    pub async fn start(
        udp_addr: SocketAddr,
        ips: &[IpAddr],
        settings: WhipSettings,
    ) -> std::io::Result<Arc<Whip>> {
        let socket = UdpSocket::bind(udp_addr).await?;
        let local = socket.local_addr()?;
        let candidates = candidates(local, ips)?;
        tracing::info!(addr = %local, candidates = ?candidates, "whip: listening (UDP, ICE-lite)");
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let sessions = Arc::new(Mutex::new(HashMap::new()));
        let task = Task {
            socket,
            demux: Demux::new(candidates.clone(), sessions.clone(), settings.timing),
        };
        tokio::spawn(task.run(rx));
        Ok(Arc::new(Whip {
            settings,
            candidates,
            commands: tx,
            sessions,
        }))
    }

    /// Sessions running or reserved.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Reserves a session for `channel`, unless `max_sessions` are running or reserved.
    pub fn reserve(&self, channel: &str) -> Option<Reservation> {
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= self.settings.max_sessions {
            return None;
        }
        // 128 random bits do not collide with a running session's id.
        let id = session_id();
        sessions.insert(id.clone(), channel.to_string());
        Some(Reservation {
            sessions: self.sessions.clone(),
            id,
            started: false,
        })
    }

    /// The channel of a session, if it exists.
    pub fn session_channel(&self, id: &str) -> Option<String> {
        lock(&self.sessions).get(id).cloned()
    }

    /// Hands a negotiated session to the UDP task, with a media thread
    /// that owns `publisher`; returns the session id. On error the
    /// reservation is given back.
    pub(super) fn start_session(
        &self,
        mut reservation: Reservation,
        channel: &str,
        rtc: Rtc,
        publisher: Publisher,
        audio: bool,
    ) -> Result<String, StartError> {
        let id = reservation.id.clone();
        let (tx, rx) = crossbeam_channel::bounded(MEDIA_QUEUE);
        let audio_bps = audio.then_some(self.settings.audio_bps);
        let worker = MediaThread::new(channel.to_string(), publisher, audio_bps);
        std::thread::Builder::new()
            .name(format!("whip-{channel}"))
            .spawn(move || worker.run(rx))
            .map_err(StartError::Thread)?;
        let start = Command::Start {
            id: id.clone(),
            channel: channel.to_string(),
            rtc: Box::new(rtc),
            media: tx,
        };
        // A refused command drops the media sender: the media thread ends
        // and its publisher leaves the channel.
        if self.commands.try_send(start).is_err() {
            return Err(StartError::Busy);
        }
        // The UDP task removes it from the table when the session ends.
        reservation.started = true;
        Ok(id)
    }

    /// Ends a session; false when the UDP task could not take the command
    /// (the session then ends by its idle timeout).
    pub(super) fn stop_session(&self, id: &str) -> bool {
        self.commands
            .try_send(Command::Stop { id: id.to_string() })
            .is_ok()
    }
}

/// 128 random bits: the session URL is the capability to end the session.
fn session_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// The host candidates: the configured addresses, else every address of
/// the socket's family on this host's interfaces (the socket's own
/// address when it is bound to one).
fn candidates(local: SocketAddr, ips: &[IpAddr]) -> std::io::Result<Vec<SocketAddr>> {
    let port = local.port();
    let mut out: Vec<SocketAddr> = if !ips.is_empty() {
        ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
    } else if !local.ip().is_unspecified() {
        vec![local]
    } else {
        if_addrs::get_if_addrs()?
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| ip.is_ipv4() == local.is_ipv4())
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    };
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(std::io::Error::other(
            "whip: no address to announce as an ICE candidate; set whip.ips",
        ));
    }
    Ok(out)
}

struct Task {
    socket: UdpSocket,
    demux: Demux,
}

/// Every session's sans-IO state and the routing of datagrams to them: a
/// known source address goes to its session; a new one is opened only by an
/// ICE binding request that a session's credentials accept. Fed datagrams,
/// commands and time; what to send collects in `out`. The task owns the
/// socket around it.
pub struct Demux {
    candidates: Vec<SocketAddr>,
    sessions: HashMap<String, Session>,
    /// A peer address and the local candidate it sends to, per session.
    by_addr: HashMap<SocketAddr, (String, SocketAddr)>,
    shared: Arc<Mutex<HashMap<String, String>>>,
    timing: SessionTiming,
    out: Vec<Transmit>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let now = Instant::now();
            let deadline = self.demux.deadline().unwrap_or(now + IDLE_WAKE);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.contained(|d| d.datagram(from, &buf[..n])),
                    // Linux reports ICMP errors for earlier sends here;
                    // they concern one peer, never the socket.
                    Err(e) => tracing::debug!(error = %e, "whip: recv_from"),
                },
                c = commands.recv() => match c {
                    Some(c) => self.contained(|d| d.command(c)),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.contained(|d| d.tick(Instant::now()));
                }
            }
            self.send();
            self.contained(Demux::reap);
        }
    }

    /// Runs one step of the sessions' state machines. A panic in it (str0m
    /// fed something it did not expect, say) ends every session, whose
    /// state it may have left half-changed, and the task goes on with the
    /// same socket: publishers reconnect, the port never goes away.
    fn contained(&mut self, step: impl FnOnce(&mut Demux)) {
        let demux = &mut self.demux;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(demux))).is_err() {
            tracing::error!(
                sessions = self.demux.sessions.len(),
                "whip: the UDP task panicked; ending its sessions and going on"
            );
            METRICS.task_restarts.with_label_values(&["whip udp"]).inc();
            self.demux.reset();
        }
    }

    fn send(&mut self) {
        for t in self.demux.out.drain(..) {
            // A full socket buffer loses this datagram like the network
            // would; RTCP and DTLS retransmit, and the loop never blocks.
            if let Err(e) = self.socket.try_send_to(&t.data, t.to) {
                tracing::debug!(to = %t.to, error = %e, "whip: send dropped");
            }
        }
    }
}

impl Demux {
    /// `shared`: the session table the HTTP side reads; ended sessions
    /// leave it here.
    pub fn new(
        candidates: Vec<SocketAddr>,
        shared: Arc<Mutex<HashMap<String, String>>>,
        timing: SessionTiming,
    ) -> Self {
        Demux {
            candidates,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            shared,
            timing,
            out: Vec::new(),
        }
    }

    /// Starts session `id`: its frames go to `media`.
    pub fn start(
        &mut self,
        id: String,
        channel: String,
        rtc: Rtc,
        media: crossbeam_channel::Sender<MediaMsg>,
    ) {
        self.command(Command::Start {
            id,
            channel,
            rtc: Box::new(rtc),
            media,
        });
    }

    /// When `tick` must be called next, if any session is running.
    pub fn deadline(&self) -> Option<Instant> {
        self.sessions.values().map(Session::deadline).min()
    }

    /// Datagrams to send, drained by the caller.
    pub fn transmits(&mut self) -> &mut Vec<Transmit> {
        &mut self.out
    }

    /// Running sessions, and the source addresses routed to each.
    pub fn routes(&self) -> impl Iterator<Item = (&SocketAddr, &str)> {
        self.by_addr.iter().map(|(a, (id, _))| (a, id.as_str()))
    }

    pub fn has_session(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    fn command(&mut self, c: Command) {
        let now = Arrival::now();
        match c {
            Command::Start {
                id,
                channel,
                rtc,
                media,
            } => {
                let s = Session::new(channel, *rtc, media, self.timing, now, &mut self.out);
                self.sessions.insert(id, s);
            }
            Command::Stop { id } => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.end(End::Deleted);
                }
            }
        }
    }

    /// One datagram off the socket, from `from`.
    pub fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let arrival = Arrival::now();
        let now = arrival.at;
        let known = self.by_addr.get(&from).cloned();
        let (id, to) = match known {
            Some(k) => k,
            None => match self.claim(now, from, data) {
                Some(k) => k,
                None => return,
            },
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            self.by_addr.remove(&from);
            return;
        };
        if !s.receive(arrival, from, to, data, &mut self.out) {
            dropped("refused");
        }
    }

    /// Finds the session a datagram from a new address belongs to: only an
    /// ICE binding request with a session's credentials opens an address.
    fn claim(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<(String, SocketAddr)> {
        if !is_stun(data) {
            dropped("unknown_source");
            return None;
        }
        let to = self.local_for(from)?;
        let found = self
            .sessions
            .iter()
            .find(|(_, s)| s.ended().is_none() && s.accepts(now, from, to, data))
            .map(|(id, _)| id.clone());
        match found {
            Some(id) => {
                self.by_addr.insert(from, (id.clone(), to));
                Some((id, to))
            }
            None => {
                dropped("unknown_source");
                None
            }
        }
    }

    /// The candidate a peer's datagrams arrive on: the only one of its
    /// family, else the one the kernel routes replies from.
    fn local_for(&self, from: SocketAddr) -> Option<SocketAddr> {
        let same: Vec<SocketAddr> = self
            .candidates
            .iter()
            .copied()
            .filter(|c| c.is_ipv4() == from.is_ipv4())
            .collect();
        if same.len() <= 1 {
            return same.first().copied();
        }
        let unspecified: SocketAddr = if from.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let routed = std::net::UdpSocket::bind(unspecified)
            .and_then(|s| s.connect(from).and_then(|()| s.local_addr()))
            .ok()
            .map(|a| a.ip());
        same.iter()
            .find(|c| Some(c.ip()) == routed)
            .or(same.first())
            .copied()
    }

    /// Advances every session whose deadline is due at `now`.
    pub fn tick(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.deadline() <= now {
                s.tick(now, &mut self.out);
            }
        }
    }

    /// Drops ended sessions: their media threads flush and release the
    /// channel's publisher.
    /// Drops every session (their media threads then end and their
    /// publishers leave), keeping reservations not yet started.
    fn reset(&mut self) {
        let mut shared = lock(&self.shared);
        for (id, _) in self.sessions.drain() {
            shared.remove(&id);
        }
        self.by_addr.clear();
        self.out.clear();
    }

    pub fn reap(&mut self) {
        let ended: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.ended().is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            let Some(s) = self.sessions.remove(&id) else {
                continue;
            };
            let why = s.ended().cloned().unwrap_or(End::Deleted);
            self.by_addr.retain(|_, (sid, _)| *sid != id);
            lock(&self.shared).remove(&id);
            METRICS
                .whip_sessions_ended
                .with_label_values(&[why.reason()])
                .inc();
            match &why {
                End::Failed(e) => {
                    if let Some(held) = SESSION_FAILED.admit_now() {
                        tracing::warn!(channel = %s.channel, error = %e, held_back = held, "whip: session failed")
                    }
                }
                _ => {
                    tracing::info!(channel = %s.channel, reason = why.reason(), "whip: session ended")
                }
            }
        }
    }
}

/// RFC 7983 7: STUN's first byte is 0..=3; RFC 5389 6: its magic cookie.
fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4 && data[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

fn dropped(reason: &'static str) {
    METRICS
        .whip_datagrams_dropped
        .with_label_values(&[reason])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::whip::SessionTiming;

    #[tokio::test]
    async fn a_panic_in_a_step_ends_the_sessions_and_the_task_goes_on() {
        let timing = SessionTiming {
            segment_target: Duration::from_secs(2),
            part_target: Duration::from_millis(200),
            idle: Duration::from_secs(10),
        };
        let socket = UdpSocket::bind(("127.0.0.1", 0)).await.expect("socket");
        let local = socket.local_addr().expect("address");
        let shared = Arc::new(Mutex::new(HashMap::new()));
        let mut task = Task {
            socket,
            demux: Demux::new(vec![local], shared.clone(), timing),
        };
        let restarts = || METRICS.task_restarts.with_label_values(&["whip udp"]).get();
        let before = restarts();
        lock(&shared).insert("reserved".to_string(), "ch".to_string());
        task.contained(|_| panic!("a step that fails"));
        assert_eq!(restarts() - before, 1);
        assert!(lock(&shared).contains_key("reserved"), "reservations kept");
        // The task goes on: the next steps run.
        let mut ran = false;
        task.contained(|_| ran = true);
        assert!(ran);
        assert_eq!(restarts() - before, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reservations_never_pass_the_cap() {
        const CAP: usize = 5;
        let settings = WhipSettings {
            timing: SessionTiming {
                segment_target: Duration::from_secs(2),
                part_target: Duration::from_millis(200),
                idle: Duration::from_secs(10),
            },
            max_sessions: CAP,
            audio_bps: 128_000,
        };
        let whip = Whip::start(([127, 0, 0, 1], 0).into(), &[], settings)
            .await
            .expect("WHIP socket");
        for round in 0..20 {
            // 32 POSTs at once, each holding its place while the others try.
            let barrier = Arc::new(std::sync::Barrier::new(32));
            let tries: Vec<_> = (0..32)
                .map(|i| {
                    let (whip, barrier) = (whip.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let r = whip.reserve(&format!("ch{i}"));
                        let seen = whip.session_count();
                        barrier.wait();
                        (r, seen)
                    })
                })
                .collect();
            let results: Vec<_> = tries.into_iter().map(|t| t.join().expect("try")).collect();
            let taken = results.iter().filter(|(r, _)| r.is_some()).count();
            assert_eq!(taken, CAP, "round {round}: places taken");
            assert!(
                results.iter().all(|(_, seen)| *seen <= CAP),
                "round {round}"
            );
            assert_eq!(whip.session_count(), CAP);
            drop(results);
            assert_eq!(
                whip.session_count(),
                0,
                "dropped reservations are given back"
            );
        }
    }
}
