//! How a node stops: the signals, the drain (no new publishers, live streams
//! served to their end or to a deadline, then ended with ENDLIST and their
//! recordings finished) and what systemd is told along the way (readiness,
//! watchdog, stopping).

use crate::fleet::Fleet;
use crate::hub::status::StreamState;
use crate::hub::{Hub, ReconnectRequest};
use crate::metrics::METRICS;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a draining node looks at its streams.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// After the last stream ended, players waiting on a blocking reload get
/// the playlist with ENDLIST at once; this leaves the slower ones (a
/// player polling every target duration, a CDN) time to read it too.
const ENDLIST_GRACE: Duration = Duration::from_secs(3);

/// The longest a stopping node waits for recordings to reach their store
/// after its streams ended; what is left is uploaded at the next start.
const UPLOAD_GRACE: Duration = Duration::from_secs(30);

/// What the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or `POST /api/v1/node/drain`: serve live streams to their end
    /// or to `drain.deadline_s`.
    Drain,
    /// SIGINT (Ctrl-C), or a second signal while draining: end streams now.
    Now,
}

/// Waits for a signal or a drain asked through the API.
pub async fn stop_requested(fleet: &Fleet) -> Stop {
    let mut drain = fleet.drain_started();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Now,
        _ = signal(tokio::signal::unix::SignalKind::terminate()) => Stop::Drain,
        _ = drain.wait_for(|d| *d) => Stop::Drain,
    }
}

async fn signal(kind: tokio::signal::unix::SignalKind) {
    match tokio::signal::unix::signal(kind) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

/// Any further SIGINT or SIGTERM.
async fn another_signal() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = signal(tokio::signal::unix::SignalKind::terminate()) => {}
    }
}

/// Takes the node out of service: returns once its streams ended (or were
/// ended at the deadline), players had time to read the ENDLIST and the
/// recordings were handed to their store (or `UPLOAD_GRACE` passed).
pub async fn drain(hub: &Arc<Hub>, fleet: &Arc<Fleet>, stop: Stop, deadline: Duration) {
    fleet.drain();
    notify(&[sd_notify::NotifyState::Stopping]);
    // Tell the fleet at once rather than at the next heartbeat.
    let f = fleet.clone();
    let peers = tokio::task::spawn_blocking(move || {
        if let Err(e) = f.beat() {
            tracing::warn!(error = %e, "could not tell the live map this node drains");
        }
        f.ready_peers().unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    let live = streams_running(hub);
    tracing::info!(
        live_streams = live,
        deadline_s = deadline.as_secs_f64(),
        now = stop == Stop::Now,
        "draining: taking no new publishers"
    );
    if stop == Stop::Drain && peers > 0 {
        // A publisher that can reconnect (Enhanced RTMP) goes through the
        // fleet's hostname again and lands on a node that takes it; with no
        // such node it would only be refused here, so it is left alone.
        for channel in hub.channel_ids() {
            let h = hub.clone();
            let _ = tokio::task::spawn_blocking(move || {
                h.request_reconnect(&channel, ReconnectRequest { tc_url: None })
            })
            .await;
        }
    }
    let until = Instant::now()
        + match stop {
            Stop::Drain => deadline,
            Stop::Now => Duration::ZERO,
        };
    let mut cut_short = std::pin::pin!(another_signal());
    loop {
        if streams_running(hub) == 0 {
            break;
        }
        if Instant::now() >= until {
            tracing::info!(
                live_streams = streams_running(hub),
                "drain deadline: ending the remaining streams"
            );
            hub.end_all();
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            _ = &mut cut_short => {
                tracing::info!("second signal: ending the remaining streams now");
                hub.end_all();
                break;
            }
        }
    }
    tokio::time::sleep(ENDLIST_GRACE).await;
    let uploads_until = Instant::now() + UPLOAD_GRACE;
    while (METRICS.recordings_active.get() > 0 || METRICS.recording_spool_files.get() > 0)
        && Instant::now() < uploads_until
    {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    if METRICS.recording_spool_files.get() > 0 {
        tracing::warn!(
            files = METRICS.recording_spool_files.get(),
            "recording files not uploaded yet; the next start uploads them"
        );
    }
    tracing::info!("drained");
}

/// Streams with a publisher or within their reconnect grace period.
fn streams_running(hub: &Hub) -> usize {
    let now = Instant::now();
    hub.channel_ids()
        .iter()
        .filter(|id| {
            hub.stream_status(id, now)
                .is_some_and(|(s, _)| s.state != StreamState::Offline)
        })
        .count()
}

/// Tells systemd (when it started the node with `Type=notify`) where the
/// node is; a no-op elsewhere.
pub fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

/// With `WatchdogSec=` set, pings systemd at half the interval while the
/// node is healthy, so a wedged node (its runtime stuck, a node-wide task
/// gone for good) is restarted.
pub async fn watchdog(fleet: Arc<Fleet>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut every = tokio::time::interval(interval / 2);
    loop {
        every.tick().await;
        let stopped_task = fleet.problems().iter().any(|p| p.starts_with("task "));
        if !stopped_task {
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}
