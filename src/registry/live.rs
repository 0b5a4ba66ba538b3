//! The fleet's live map: which nodes are up (each with a lease it renews by
//! heartbeat) and which node each live channel is on.
//!
//! Every lease is judged by the database's clock (`now_ms()`), never by a
//! node's, since the nodes' clocks may differ. One heartbeat per node, not
//! per channel, keeps all of its channels: a channel's mark lives exactly
//! as long as its holder's lease, so a node that dies loses its channels
//! when its lease runs out, without anyone cleaning up after it.
//!
//! A claim is one statement that takes the mark only where it is free,
//! already ours, or held by a node whose lease expired; on PostgreSQL it
//! runs in a REPEATABLE READ transaction (run again if a concurrent claim
//! won the race), on SQLite under the write lock, so two nodes claiming one
//! channel at once never both get it.

use super::db::{Db, DbError, Mode, Row, args};
use super::{Registry, Result};
use serde::Serialize;
use std::time::Duration;

/// A node as the live map shows it to the rest of the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Unique in the fleet.
    pub id: String,
    /// Where players and publishers reach it.
    pub public_url: String,
    pub region: String,
    /// Live channels it takes; 0: no limit.
    pub capacity: u32,
    /// Taking no new publishers.
    pub draining: bool,
}

/// A node whose lease has not expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveNode {
    pub info: NodeInfo,
    /// Channels marked live on it.
    pub live_channels: u32,
    /// Until its lease expires, by the database's clock.
    pub expires_in_ms: i64,
}

/// Nodes whose lease expired this long ago, and their marks, are deleted
/// by the next heartbeat of any node: the tables stay the size of the
/// fleet, yet a node that was only cut off for a while comes back with
/// its row as it was.
const FORGET_AFTER_MS: i64 = 3_600_000;

/// Longest node id, in characters.
const MAX_NODE_ID: usize = 200;

const NODE_COLUMNS: &str = "n.id, n.public_url, n.region, n.capacity, n.draining";

fn check_node_id(id: &str) -> std::result::Result<(), DbError> {
    if id.is_empty() || id.chars().count() > MAX_NODE_ID || id.chars().any(char::is_control) {
        return Err(DbError::Precondition(format!(
            "a node id is 1 to {MAX_NODE_ID} printable characters"
        )));
    }
    Ok(())
}

/// A node from the columns [`NODE_COLUMNS`] names, from `first` on.
fn node_info(r: &Row, first: usize) -> std::result::Result<NodeInfo, DbError> {
    Ok(NodeInfo {
        id: r.text(first)?,
        public_url: r.text(first + 1)?,
        region: r.text(first + 2)?,
        capacity: r.int(first + 3)?.clamp(0, u32::MAX.into()) as u32,
        draining: r.bool(first + 4)?,
    })
}

/// The live node holding `channel_id`, if any.
fn holder(db: &mut Db<'_>, channel_id: &str) -> std::result::Result<Option<NodeInfo>, DbError> {
    db.query_opt(
        &format!(
            "SELECT {NODE_COLUMNS} FROM live_channels l JOIN fleet_nodes n ON n.id = l.node_id \
             WHERE l.channel_id = $1 AND n.expires_at_ms > now_ms()"
        ),
        args![channel_id],
    )?
    .map(|r| node_info(&r, 0))
    .transpose()
}

impl Registry {
    /// Upserts this node with a lease of `lease` from now; the channels it holds live as long as its lease.
    pub fn heartbeat(&self, node: &NodeInfo, lease: Duration) -> Result<()> {
        let lease_ms = lease.as_millis().min(i64::MAX as u128 / 4) as i64;
        self.call("heartbeat", Mode::Write, |db| {
            check_node_id(&node.id)?;
            db.exec(
                "INSERT INTO fleet_nodes (id, public_url, region, capacity, draining, expires_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, now_ms() + $6) \
                 ON CONFLICT (id) DO UPDATE SET public_url = excluded.public_url, \
                    region = excluded.region, capacity = excluded.capacity, \
                    draining = excluded.draining, expires_at_ms = excluded.expires_at_ms",
                args![
                    &node.id,
                    &node.public_url,
                    &node.region,
                    i64::from(node.capacity),
                    node.draining,
                    lease_ms
                ],
            )?;
            db.exec(
                "DELETE FROM live_channels WHERE node_id IN \
                    (SELECT id FROM fleet_nodes WHERE expires_at_ms < now_ms() - $1)",
                args![FORGET_AFTER_MS],
            )?;
            db.exec(
                "DELETE FROM fleet_nodes WHERE expires_at_ms < now_ms() - $1",
                args![FORGET_AFTER_MS],
            )?;
            Ok(())
        })
    }

    /// Removes the node and the channels it holds (a clean exit).
    pub fn leave(&self, node_id: &str) -> Result<()> {
        self.call("leave", Mode::Write, |db| {
            db.exec(
                "DELETE FROM live_channels WHERE node_id = $1",
                args![node_id],
            )?;
            db.exec("DELETE FROM fleet_nodes WHERE id = $1", args![node_id])?;
            Ok(())
        })
    }

    /// Nodes whose lease has not expired, by id.
    pub fn nodes(&self) -> Result<Vec<LiveNode>> {
        self.call("nodes", Mode::Read, |db| {
            db.query(
                &format!(
                    "SELECT {NODE_COLUMNS}, \
                        (SELECT COUNT(*) FROM live_channels l WHERE l.node_id = n.id), \
                        n.expires_at_ms - now_ms() \
                     FROM fleet_nodes n WHERE n.expires_at_ms > now_ms() ORDER BY n.id"
                ),
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(LiveNode {
                    info: node_info(r, 0)?,
                    live_channels: r.int(5)?.clamp(0, u32::MAX.into()) as u32,
                    expires_in_ms: r.int(6)?,
                })
            })
            .collect()
        })
    }

    /// Marks `channel_id` live on `node_id` (which must have a current heartbeat) atomically:
    /// Ok(None) when taken (free, already ours, or its holder's lease expired), Ok(Some(holder)) when another live node holds it.
    pub fn claim_live(&self, channel_id: &str, node_id: &str) -> Result<Option<NodeInfo>> {
        self.call("claim_live", Mode::Snapshot, |db| {
            let leased = db
                .query_opt(
                    "SELECT id FROM fleet_nodes WHERE id = $1 AND expires_at_ms > now_ms()",
                    args![node_id],
                )?
                .is_some();
            if !leased {
                return Err(DbError::Precondition(format!(
                    "node {node_id} has no current lease in the live map: heartbeat before claiming"
                )));
            }
            // `SELECT ... WHERE` rather than `VALUES`: SQLite needs a WHERE
            // before an upsert's ON CONFLICT after a SELECT.
            let taken = db.exec(
                "INSERT INTO live_channels (channel_id, node_id) \
                 SELECT $1, $2 WHERE EXISTS \
                    (SELECT 1 FROM fleet_nodes WHERE id = $2 AND expires_at_ms > now_ms()) \
                 ON CONFLICT (channel_id) DO UPDATE SET node_id = excluded.node_id \
                 WHERE live_channels.node_id = excluded.node_id \
                    OR NOT EXISTS (SELECT 1 FROM fleet_nodes h \
                        WHERE h.id = live_channels.node_id AND h.expires_at_ms > now_ms())",
                args![channel_id, node_id],
            )?;
            if taken == 1 {
                return Ok(None);
            }
            // Same snapshot (or the same write lock) as the refusal: the
            // holder it saw is there.
            match holder(db, channel_id)? {
                Some(h) => Ok(Some(h)),
                None => Err(DbError::Decode(
                    "a claim was refused but the channel has no live holder".into(),
                )),
            }
        })
    }

    /// Drops the mark if `node_id` holds it.
    pub fn release_live(&self, channel_id: &str, node_id: &str) -> Result<()> {
        self.call("release_live", Mode::Write, |db| {
            db.exec(
                "DELETE FROM live_channels WHERE channel_id = $1 AND node_id = $2",
                args![channel_id, node_id],
            )
            .map(drop)
        })
    }

    /// The live node holding the channel, if its lease has not expired.
    pub fn live_holder(&self, channel_id: &str) -> Result<Option<NodeInfo>> {
        self.call("live_holder", Mode::Read, |db| holder(db, channel_id))
    }
}
