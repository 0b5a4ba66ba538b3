//! This node's place in the fleet: its entry in the live map (heartbeat and
//! lease), the channels it marked live there, where a channel live on another
//! node is, and whether the node is draining.
//!
//! A single node keeps the same map in its SQLite registry, so one code path
//! serves one node and many. Every call that reaches the registry blocks:
//! call them off the async threads.

use crate::metrics::METRICS;
use crate::registry::{NodeInfo, Registry, RegistryError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer to "where is this channel live" is reused. Players ask
/// a node for a channel live elsewhere once per playlist load at most (the
/// redirect moves them), so this bounds the registry's load per channel and
/// node at one query a second, and a channel that just went live elsewhere is
/// found within a second.
const HOLDER_TTL: Duration = Duration::from_secs(1);

/// How long a fresh claim is kept without its channel in the hub's table.
const CLAIM_SETTLE: Duration = Duration::from_secs(5);

/// Where a channel is live, as far as a player asking this node is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Whereabouts {
    /// Not live on any other node (maybe here, maybe nowhere).
    NotElsewhere,
    /// Live on another node, reachable at its public URL.
    Elsewhere(NodeInfo),
}

pub struct Fleet {
    registry: Arc<Registry>,
    me: NodeInfo,
    lease: Duration,
    draining: AtomicBool,
    drain_tx: tokio::sync::watch::Sender<bool>,
    /// Channels this node marked live in the map and has not released, and
    /// when each was last claimed.
    claimed: Mutex<HashMap<String, Instant>>,
    holders: Mutex<HashMap<String, (Instant, Whereabouts)>>,
    /// When the last heartbeat reached the registry.
    last_beat: Mutex<Option<Instant>>,
    /// Node-wide tasks (listeners, uploader, heartbeat) and whether each runs.
    tasks: Mutex<BTreeMap<&'static str, bool>>,
}

impl Fleet {
    /// This node is `me` in the map, its entry kept for `lease` after each
    /// heartbeat.
    pub fn new(registry: Arc<Registry>, me: NodeInfo, lease: Duration) -> Self {
        Fleet {
            registry,
            me,
            lease,
            draining: AtomicBool::new(false),
            drain_tx: tokio::sync::watch::channel(false).0,
            claimed: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            last_beat: Mutex::new(None),
            tasks: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.me.id
    }

    /// Renews this node's lease (and with it the channels it holds).
    pub fn beat(&self) -> Result<(), RegistryError> {
        let mut me = self.me.clone();
        me.draining = self.draining();
        let beat = self.registry.heartbeat(&me, self.lease);
        match &beat {
            Ok(()) => *lock(&self.last_beat) = Some(Instant::now()),
            Err(_) => METRICS.fleet_heartbeat_failures.inc(),
        }
        beat
    }

    /// Whether the registry answered a heartbeat within the lease: a node
    /// past it is out of the live map, and its channels may be taken over.
    pub fn registry_reachable(&self) -> bool {
        lock(&self.last_beat).is_some_and(|t| t.elapsed() < self.lease)
    }

    /// Notes whether a node-wide task runs (`/healthz` reports a stopped one).
    pub fn task_running(&self, name: &'static str, running: bool) {
        lock(&self.tasks).insert(name, running);
    }

    /// What keeps the node from working as it should; empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.registry_reachable() {
            problems.push("the registry has not answered a heartbeat within the lease".to_string());
        }
        for (name, running) in lock(&self.tasks).iter() {
            if !running {
                problems.push(format!("task {name} stopped"));
            }
        }
        problems
    }

    /// Marks the channel live on this node. `Err(holder)` when another live
    /// node holds it.
    pub fn claim(&self, channel: &str) -> Result<Result<(), NodeInfo>, RegistryError> {
        if let Some(holder) = self.registry.claim_live(channel, &self.me.id)? {
            return Ok(Err(holder));
        }
        lock(&self.claimed).insert(channel.to_string(), Instant::now());
        lock(&self.holders).remove(channel);
        Ok(Ok(()))
    }

    /// Releases every claimed channel that is no longer in `live` (its
    /// stream ended and its thread is gone). A failed release is tried again
    /// on the next call; the lease ends it at the latest.
    pub fn release_gone(&self, live: &HashSet<String>) {
        let now = Instant::now();
        let gone: Vec<String> = lock(&self.claimed)
            .iter()
            // A claim is made before its channel's thread joins the table.
            .filter(|(c, at)| !live.contains(*c) && now.duration_since(**at) > CLAIM_SETTLE)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in gone {
            match self.registry.release_live(&channel, &self.me.id) {
                Ok(()) => {
                    lock(&self.claimed).remove(&channel);
                }
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "could not release the channel in the live map");
                }
            }
        }
    }

    /// Where the channel is live if not here; answers are reused for
    /// [`HOLDER_TTL`]. A registry error reads as "not elsewhere": the player
    /// gets this node's own answer (404 for a channel it does not have).
    pub fn whereabouts(&self, channel: &str) -> Whereabouts {
        let now = Instant::now();
        if let Some((at, w)) = lock(&self.holders).get(channel)
            && now.duration_since(*at) < HOLDER_TTL
        {
            return w.clone();
        }
        let found = match self.registry.live_holder(channel) {
            Ok(Some(holder)) if holder.id != self.me.id => Whereabouts::Elsewhere(holder),
            Ok(_) => Whereabouts::NotElsewhere,
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "could not read the live map");
                return Whereabouts::NotElsewhere;
            }
        };
        let mut holders = lock(&self.holders);
        // Ids come from requests: keep the cache to what is fresh.
        holders.retain(|_, (at, _)| now.duration_since(*at) < HOLDER_TTL);
        holders.insert(channel.to_string(), (now, found.clone()));
        found
    }

    /// Other nodes in the map that take publishers.
    pub fn ready_peers(&self) -> Result<usize, RegistryError> {
        Ok(self
            .registry
            .nodes()?
            .into_iter()
            .filter(|n| n.info.id != self.me.id && !n.info.draining)
            .count())
    }

    /// Starts draining; false when it had started already.
    pub fn drain(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::SeqCst);
        if first {
            self.drain_tx.send_replace(true);
            METRICS.draining.set(1);
        }
        first
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once a drain has started, however it was asked for.
    pub fn drain_started(&self) -> tokio::sync::watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }

    /// Takes this node and its channels out of the map (a clean exit).
    pub fn leave(&self) {
        if let Err(e) = self.registry.leave(&self.me.id) {
            tracing::warn!(error = %e, "could not leave the live map; the lease will expire");
        }
        lock(&self.claimed).clear();
    }

    /// Whether one more live channel fits `node.capacity` (0: no limit).
    pub fn has_room(&self, live: usize) -> bool {
        self.me.capacity == 0 || live < self.me.capacity as usize
    }
}

/// `node.id`, or the host name (`rungs` if there is none).
pub fn node_id(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rungs".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of a
    // cache; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
