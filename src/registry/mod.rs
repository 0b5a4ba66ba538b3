//! The registry: channels and their stream keys, playback keys (public
//! halves only), revoked viewers, stream sessions, the recordings index and
//! the fleet's live map, kept in SQLite (a file in the data dir, one node)
//! or PostgreSQL (one database a fleet of nodes shares), chosen by
//! `[registry] url`.
//!
//! Every call is one short statement or transaction on the database, so a
//! channel created by the CLI, or by another node, is visible at once. The
//! API is blocking and must be called from blocking threads only (see
//! `db.rs`: the PostgreSQL client panics on an async runtime's thread).
//! Stream keys are compared in constant time and never logged; the
//! database URL's password never appears in an error, a log or the
//! config as served.
//!
//! Every call counts in `rungs_registry_queries_total{op}` (and, when the
//! database fails it, `rungs_registry_errors_total{op}`), `op` being the
//! method's name, so that the registry's load per live channel and per
//! heartbeat can be read off the metrics.

mod db;
mod live;
mod policy;
mod recordings;
mod schema;
mod sessions;

pub use crate::logging::redact_url;
pub use db::DbError;
pub use live::{LiveNode, NodeInfo};
pub use policy::{Multitrack, Policy, TrackUse};
pub use recordings::*;
pub use sessions::*;

use crate::metrics::METRICS;
use db::{Backend, Db, Mode, Row, args};
use rand::RngCore;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// How stale a node's access rules and hooks may get: a channel made
/// private, its rules or hooks changed, a key deleted or a viewer revoked
/// through the CLI or another node takes effect within this (at once through
/// this node's API).
pub const ACCESS_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed the call `op` (a method's name, or `open`).
    /// `at` is the SQLite file or the PostgreSQL URL without its password.
    #[error("registry {op} on {at}: {source}")]
    Db {
        op: &'static str,
        at: String,
        #[source]
        source: DbError,
    },
    #[error("making channel database {path} private (mode 0600): {source}")]
    Private {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no channel with id {0}")]
    NotFound(String),
    #[error("invalid channel name: {0}")]
    InvalidName(String),
    #[error("no playback key with id {0}")]
    KeyNotFound(String),
    #[error("invalid playback key: {0}")]
    InvalidKey(String),
    #[error("invalid viewer id: {0}")]
    InvalidViewer(String),
    #[error("invalid channel policy: {0}")]
    InvalidPolicy(String),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// The schema version this build brings a database to when it opens it.
pub const SCHEMA_VERSION: i64 = schema::LATEST;

/// `[registry]`: where channels, keys, sessions, recordings and the live map
/// are kept.
#[derive(Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Empty: SQLite in the data dir (one node). `postgres://user:pass@host/db`
    /// (or `postgresql://`): a PostgreSQL database every node of a fleet
    /// shares; the client's options may follow (`?connect_timeout=10`,
    /// default 5 s). No TLS: `sslmode=require` fails to connect. Shown with
    /// its password redacted.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
}

/// By hand: the URL's password must not reach a log through `{:?}`.
impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

fn serialize_redacted_url<S: serde::Serializer>(
    url: &str,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// A channel as stored. `stream_key` is a secret: it is shown to the
/// channel's owner (CLI, admin API) and nowhere else; `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub stream_key: String,
    /// ABR ladder preset (`standard`, `passthrough` or one from config).
    pub ladder: String,
    pub created_at: u64,
    /// Players need a signed playback token (see `serve::access`).
    pub private: bool,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("stream_key", &"<secret>")
            .field("ladder", &self.ladder)
            .field("created_at", &self.created_at)
            .field("private", &self.private)
            .finish()
    }
}

pub struct Registry {
    db: Backend,
    /// The node this handle writes sessions for (`""`: none, as the CLI).
    node_id: String,
}

// Shared by the node's threads and tasks behind an `Arc`.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Registry>();
};

/// Longest viewer id a playback token may carry, as the managed service allows.
pub const MAX_VIEWER_ID: usize = 40;

/// Longest accepted channel name, in characters.
const MAX_NAME: usize = 200;

impl Registry {
    /// Opens (creating if needed) `channels.sqlite3` in `data_dir`, for no
    /// node in particular.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_sqlite(data_dir, "")
    }

    /// Opens the registry `cfg` names: SQLite in `data_dir` when its URL is
    /// empty, else PostgreSQL; the schema is brought up to date either way.
    /// `node_id` is the node whose stream sessions this handle opens and
    /// closes (`""` for a tool that opens none, as the CLI).
    pub fn open_config(cfg: &RegistryConfig, data_dir: &Path, node_id: &str) -> Result<Self> {
        let url = cfg.url.trim();
        if url.is_empty() {
            return Self::open_sqlite(data_dir, node_id);
        }
        let open_error = |source| RegistryError::Db {
            op: "open",
            at: redact_url(url),
            source,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(open_error(DbError::Precondition(
                "registry.url must be empty (SQLite) or postgres://user:password@host:port/database"
                    .into(),
            )));
        }
        let reg = Registry {
            db: Backend::postgres(url).map_err(open_error)?,
            node_id: node_id.to_string(),
        };
        reg.call("open", Mode::Write, |db| schema::migrate(db).map(drop))?;
        Ok(reg)
    }

    fn open_sqlite(data_dir: &Path, node_id: &str) -> Result<Self> {
        let path = data_dir.join("channels.sqlite3");
        let db = |source: rusqlite::Error| RegistryError::Db {
            op: "open",
            at: path.display().to_string(),
            source: source.into(),
        };
        // Stream keys live here: the node's user alone reads the file, and
        // SQLite gives its WAL and shared-memory files the same mode.
        let private = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)));
        if let Err(source) = private {
            return Err(RegistryError::Private { path, source });
        }
        let conn = rusqlite::Connection::open(&path).map_err(db)?;
        // The node and the CLI may write at the same moment; wait rather than fail.
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        wal(&conn).map_err(db)?;
        // Every statement the registry runs stays prepared.
        conn.set_prepared_statement_cache_capacity(128);
        let reg = Registry {
            db: Backend::sqlite(path, conn),
            node_id: node_id.to_string(),
        };
        reg.call("open", Mode::Write, |db| schema::migrate(db).map(drop))?;
        Ok(reg)
    }

    /// The node this handle opens stream sessions for.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The database as logs may name it: the SQLite file, or the
    /// PostgreSQL URL with its password redacted.
    pub fn location(&self) -> String {
        self.db.location()
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64> {
        self.call("schema_version", Mode::Read, schema::version)
    }

    /// A number that moves whenever channels, playback keys or revocations
    /// change, on any node: a reader that saw it unchanged since its last
    /// full read has nothing new to read. Read it before the rows it guards,
    /// so that a change landing between the two is read again next time.
    pub fn access_generation(&self) -> Result<i64> {
        self.call("access_generation", Mode::Read, |db| {
            db.query_one("SELECT value FROM access_generation WHERE id = 1", &[])?
                .int(0)
        })
    }

    /// Runs `read` (a full read of what access or hooks need, true when it
    /// worked) unless the access generation is still `seen`. Returns what to
    /// pass as `seen` next time: `None` after a failed read, so the next
    /// call reads again.
    pub fn read_if_changed(&self, seen: Option<i64>, read: impl FnOnce() -> bool) -> Option<i64> {
        let now = self.access_generation().ok();
        if now.is_some() && now == seen {
            return seen;
        }
        if read() { now } else { None }
    }

    /// Runs `read` now (blocking) and then, inside a tokio runtime, on the
    /// blocking pool within [`ACCESS_REFRESH`] of every change the access
    /// generation shows, for as long as `owner` lives. `read` says whether
    /// it worked; a failed read is tried again at the next tick.
    pub fn follow_access<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        owner: &Arc<T>,
        read: fn(&T, &Registry) -> bool,
    ) {
        let mut seen = self.read_if_changed(None, || read(owner, self));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (owner, registry) = (Arc::downgrade(owner), self.clone());
        rt.spawn(async move {
            let mut every = tokio::time::interval(ACCESS_REFRESH);
            // The first tick is now, and the first read is done.
            every.tick().await;
            loop {
                every.tick().await;
                let Some(owner) = owner.upgrade() else {
                    return;
                };
                let registry = registry.clone();
                let pass = tokio::task::spawn_blocking(move || {
                    registry.read_if_changed(seen, || read(&owner, &registry))
                });
                // Only a panic fails the join, and then the next tick reads all.
                seen = pass.await.unwrap_or(None);
            }
        });
    }

    /// Runs one registry call `op`, counted in the registry metrics; a
    /// database failure comes back naming `op` and the database.
    fn call<T: Send>(
        &self,
        op: &'static str,
        mode: Mode,
        f: impl FnMut(&mut Db<'_>) -> std::result::Result<T, DbError> + Send,
    ) -> Result<T> {
        METRICS.registry_queries.with_label_values(&[op]).inc();
        self.db.run(mode, f).map_err(|source| {
            METRICS.registry_errors.with_label_values(&[op]).inc();
            RegistryError::Db {
                op,
                at: self.db.location(),
                source,
            }
        })
    }

    /// Creates a channel. `ladder` must already be checked against the
    /// node's ladders; the registry only stores it.
    pub fn create(&self, name: &str, ladder: &str) -> Result<Channel> {
        self.create_with(name, ladder, false)
    }

    /// Creates a channel, private (playback tokens required) or not.
    pub fn create_with(&self, name: &str, ladder: &str, private: bool) -> Result<Channel> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            return Err(RegistryError::InvalidName(format!(
                "a name is 1 to {MAX_NAME} printable characters"
            )));
        }
        let channel = Channel {
            id: random_id(),
            name: name.to_string(),
            stream_key: random_key(),
            ladder: ladder.to_string(),
            created_at: unix_now(),
            private,
        };
        self.call("create", Mode::Write, |db| {
            db.exec(
                "INSERT INTO channels (id, name, stream_key, created_at, ladder, private) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                args![
                    &channel.id,
                    &channel.name,
                    &channel.stream_key,
                    channel.created_at as i64,
                    &channel.ladder,
                    channel.private
                ],
            )
        })?;
        Ok(channel)
    }

    pub fn list(&self) -> Result<Vec<Channel>> {
        self.call("list", Mode::Read, list_channels)
    }

    pub fn get(&self, id: &str) -> Result<Channel> {
        self.call("get", Mode::Read, |db| get_channel(db, id))?
            .ok_or_else(|| RegistryError::NotFound(id.to_string()))
    }

    /// Deletes the channel, and its mark in the live map.
    pub fn delete(&self, id: &str) -> Result<()> {
        let deleted = self.call("delete", Mode::Write, |db| {
            let n = db.exec("DELETE FROM channels WHERE id = $1", args![id])?;
            db.exec("DELETE FROM live_channels WHERE channel_id = $1", args![id])?;
            Ok(n)
        })?;
        match deleted {
            0 => Err(RegistryError::NotFound(id.to_string())),
            _ => Ok(()),
        }
    }

    /// Replaces the channel's stream key; the old one stops working at once.
    pub fn rotate_key(&self, id: &str) -> Result<Channel> {
        let key = random_key();
        self.call("rotate_key", Mode::Write, |db| {
            match db.exec(
                "UPDATE channels SET stream_key = $1 WHERE id = $2",
                args![&key, id],
            )? {
                0 => Ok(None),
                _ => get_channel(db, id),
            }
        })?
        .ok_or_else(|| RegistryError::NotFound(id.to_string()))
    }

    /// Makes a channel private (playback tokens required) or public; players
    /// see the change within the node's access refresh (about a second).
    pub fn set_private(&self, id: &str, private: bool) -> Result<Channel> {
        self.call("set_private", Mode::Write, |db| {
            match db.exec(
                "UPDATE channels SET private = $1 WHERE id = $2",
                args![private, id],
            )? {
                0 => Ok(None),
                _ => get_channel(db, id),
            }
        })?
        .ok_or_else(|| RegistryError::NotFound(id.to_string()))
    }

    /// Ids of the channels that need a playback token.
    pub fn private_channels(&self) -> Result<Vec<String>> {
        self.call("private_channels", Mode::Read, |db| {
            db.query("SELECT id FROM channels WHERE private ORDER BY id", &[])?
                .iter()
                .map(|r| r.text(0))
                .collect()
        })
    }

    /// Registers the public half of a playback key (an SPKI PEM, already
    /// checked by the caller to be ECDSA P-384).
    pub fn add_playback_key(&self, public_pem: &str) -> Result<PlaybackKey> {
        let key = PlaybackKey {
            id: format!("pk_{}", random_hex(8)),
            public_pem: public_pem.to_string(),
            created_at: unix_now(),
        };
        self.call("add_playback_key", Mode::Write, |db| {
            db.exec(
                "INSERT INTO playback_keys (id, public_pem, created_at) VALUES ($1, $2, $3)",
                args![&key.id, &key.public_pem, key.created_at as i64],
            )
        })?;
        Ok(key)
    }

    pub fn playback_keys(&self) -> Result<Vec<PlaybackKey>> {
        self.call("playback_keys", Mode::Read, |db| {
            db.query(
                "SELECT id, public_pem, created_at FROM playback_keys ORDER BY created_at, id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(PlaybackKey {
                    id: r.text(0)?,
                    public_pem: r.text(1)?,
                    created_at: r.unsigned(2)?,
                })
            })
            .collect()
        })
    }

    /// Deletes a playback key: tokens it signed are refused from the next
    /// access refresh on.
    pub fn delete_playback_key(&self, id: &str) -> Result<()> {
        match self.call("delete_playback_key", Mode::Write, |db| {
            db.exec("DELETE FROM playback_keys WHERE id = $1", args![id])
        })? {
            0 => Err(RegistryError::KeyNotFound(id.to_string())),
            _ => Ok(()),
        }
    }

    /// Revokes a viewer: tokens naming it issued before now are refused
    /// (a token without `iat` naming it is refused for good). Revoking
    /// again moves the instant forward.
    pub fn revoke_viewer(&self, viewer_id: &str) -> Result<Revocation> {
        check_viewer_id(viewer_id)?;
        let rev = Revocation {
            viewer_id: viewer_id.to_string(),
            revoked_at: unix_now(),
        };
        self.call("revoke_viewer", Mode::Write, |db| {
            db.exec(
                "INSERT INTO revoked_viewers (viewer_id, revoked_at) VALUES ($1, $2) \
                 ON CONFLICT (viewer_id) DO UPDATE SET revoked_at = excluded.revoked_at",
                args![&rev.viewer_id, rev.revoked_at as i64],
            )
        })?;
        Ok(rev)
    }

    pub fn revocations(&self) -> Result<Vec<Revocation>> {
        self.call("revocations", Mode::Read, |db| {
            db.query(
                "SELECT viewer_id, revoked_at FROM revoked_viewers ORDER BY revoked_at, viewer_id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Revocation {
                    viewer_id: r.text(0)?,
                    revoked_at: r.unsigned(1)?,
                })
            })
            .collect()
        })
    }

    /// The channel whose stream key is `key`. Every stored key is compared in
    /// constant time, so response timing says nothing about how close a guess was.
    pub fn find_by_key(&self, key: &str) -> Result<Option<Channel>> {
        let mut found = None;
        for ch in self.call("find_by_key", Mode::Read, list_channels)? {
            let eq = ch.stream_key.as_bytes().ct_eq(key.as_bytes());
            if bool::from(eq) {
                found = Some(ch);
            }
        }
        Ok(found)
    }
}

/// Puts the database in WAL mode (readers and a writer at once). Switching
/// a new file's mode takes an exclusive lock, and two processes switching it
/// at the same moment deadlock, which SQLite answers with an immediate
/// "database is locked" instead of waiting: try again for a few seconds.
fn wal(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(
                    5 + u64::from(rand::random::<u8>() % 20),
                ));
            }
            other => return other,
        }
    }
}

fn list_channels(db: &mut Db<'_>) -> std::result::Result<Vec<Channel>, DbError> {
    db.query(
        "SELECT id, name, stream_key, created_at, ladder, private FROM channels \
         ORDER BY created_at, id",
        &[],
    )?
    .iter()
    .map(row_to_channel)
    .collect()
}

fn get_channel(db: &mut Db<'_>, id: &str) -> std::result::Result<Option<Channel>, DbError> {
    db.query_opt(
        "SELECT id, name, stream_key, created_at, ladder, private FROM channels WHERE id = $1",
        args![id],
    )?
    .map(|r| row_to_channel(&r))
    .transpose()
}

/// The public half of a playback key: what verifies the tokens it signed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlaybackKey {
    pub id: String,
    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), ECDSA P-384.
    pub public_pem: String,
    pub created_at: u64,
}

/// A revoked viewer id and when (unix seconds) it was revoked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revocation {
    pub viewer_id: String,
    pub revoked_at: u64,
}

fn check_viewer_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > MAX_VIEWER_ID || id.chars().any(char::is_control) {
        return Err(RegistryError::InvalidViewer(format!(
            "a viewer id is 1 to {MAX_VIEWER_ID} printable characters"
        )));
    }
    Ok(())
}

fn row_to_channel(r: &Row) -> std::result::Result<Channel, DbError> {
    Ok(Channel {
        id: r.text(0)?,
        name: r.text(1)?,
        stream_key: r.text(2)?,
        created_at: r.unsigned(3)?,
        ladder: r.text(4)?,
        private: r.bool(5)?,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Channel ids are public (they appear in playback URLs); 64 random bits keep
/// them unguessable enough that listing is not needed to find private ones.
fn random_id() -> String {
    random_hex(8)
}

/// 160 random bits, above the 128 a stream key needs.
pub fn random_key() -> String {
    format!("sk_{}", random_hex(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_find_rotate_delete_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("open");
        let a = reg.create("alpha", "standard").expect("create");
        let b = reg.create(" beta ", "passthrough").expect("create");
        assert_eq!(b.name, "beta");
        assert_eq!(b.ladder, "passthrough");
        assert_ne!(a.id, b.id);
        assert!(a.stream_key.len() >= 3 + 32, "key has at least 128 bits");
        assert_eq!(
            reg.find_by_key(&a.stream_key).expect("find"),
            Some(a.clone())
        );
        assert_eq!(reg.find_by_key("sk_nope").expect("find"), None);
        assert_eq!(reg.find_by_key("").expect("find"), None);

        let rotated = reg.rotate_key(&a.id).expect("rotate");
        assert_ne!(rotated.stream_key, a.stream_key);
        assert_eq!(reg.find_by_key(&a.stream_key).expect("find"), None);
        drop(reg);

        let reg = Registry::open(dir.path()).expect("reopen");
        assert_eq!(reg.list().expect("list").len(), 2);
        assert_eq!(
            reg.find_by_key(&rotated.stream_key).expect("find"),
            Some(rotated.clone())
        );
        reg.delete(&a.id).expect("delete");
        assert!(matches!(reg.get(&a.id), Err(RegistryError::NotFound(_))));
        assert!(matches!(reg.delete(&a.id), Err(RegistryError::NotFound(_))));
        assert!(matches!(
            reg.rotate_key(&a.id),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn a_database_from_before_ladders_gets_the_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = rusqlite::Connection::open(dir.path().join("channels.sqlite3")).expect("open");
        conn.execute_batch(
            "CREATE TABLE channels (id TEXT PRIMARY KEY, name TEXT NOT NULL,
             stream_key TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);
             INSERT INTO channels VALUES ('c1', 'old', 'sk_old', 1);",
        )
        .expect("old schema");
        drop(conn);
        let reg = Registry::open(dir.path()).expect("migrate");
        assert_eq!(reg.get("c1").expect("get").ladder, "standard");
        assert!(!reg.get("c1").expect("get").private);
    }

    #[test]
    fn private_flag_keys_and_revocations_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("open");
        let a = reg.create_with("a", "standard", true).expect("create");
        let b = reg.create("b", "standard").expect("create");
        assert!(a.private && !b.private);
        assert!(reg.set_private(&b.id, true).expect("set").private);
        assert!(!reg.set_private(&a.id, false).expect("set").private);
        assert!(matches!(
            reg.set_private("nope", true),
            Err(RegistryError::NotFound(_))
        ));
        let k = reg.add_playback_key("PEM").expect("key");
        assert!(reg.revoke_viewer(&"v".repeat(41)).is_err());
        reg.revoke_viewer("viewer-1").expect("revoke");
        reg.revoke_viewer("viewer-1").expect("revoke again");
        drop(reg);
        let reg = Registry::open(dir.path()).expect("reopen");
        assert_eq!(reg.private_channels().expect("private"), vec![b.id.clone()]);
        assert_eq!(reg.playback_keys().expect("keys"), vec![k.clone()]);
        assert_eq!(reg.revocations().expect("revs").len(), 1);
        reg.delete_playback_key(&k.id).expect("delete");
        assert!(matches!(
            reg.delete_playback_key(&k.id),
            Err(RegistryError::KeyNotFound(_))
        ));
    }

    #[test]
    fn rejects_bad_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("open");
        assert!(reg.create("   ", "standard").is_err());
        assert!(reg.create("a\nb", "standard").is_err());
        assert!(reg.create(&"x".repeat(201), "standard").is_err());
    }

    #[test]
    fn a_second_handle_sees_channels_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Registry::open(dir.path()).expect("open");
        let cli = Registry::open(dir.path()).expect("open");
        let ch = cli.create("live-now", "standard").expect("create");
        assert_eq!(node.find_by_key(&ch.stream_key).expect("find"), Some(ch));
    }
}
