//! SQLite channel store: channels and their stream keys, playback keys
//! (public halves only) and revoked viewers survive restarts.
//!
//! Every call opens its own short transaction on the database file, so a
//! channel created by the CLI while the node runs is visible to the node at
//! once. Stream keys are compared in constant time and never logged.

mod policy;
mod recordings;
mod sessions;

pub use policy::{Multitrack, Policy, TrackUse};
pub use recordings::*;
pub use sessions::*;

use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("channel database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
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

/// `[registry]`: where channels, keys, sessions, recordings and the live map
/// are kept.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Empty: SQLite in the data dir (one node). `postgres://user:pass@host/db`:
    /// a PostgreSQL database every node of a fleet shares.
    #[serde(serialize_with = "crate::config::redacted")]
    pub url: String,
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
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    stream_key  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    ladder      TEXT NOT NULL DEFAULT 'standard',
    private     INTEGER NOT NULL DEFAULT 0
);
-- Public halves only: the private key is shown once at creation and never stored.
CREATE TABLE IF NOT EXISTS playback_keys (
    id          TEXT PRIMARY KEY,
    public_pem  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
-- A token naming this viewer and issued (iat) before revoked_at is refused.
CREATE TABLE IF NOT EXISTS revoked_viewers (
    viewer_id   TEXT PRIMARY KEY,
    revoked_at  INTEGER NOT NULL
);
";

/// Columns added after the first release, applied to older databases.
const MIGRATIONS: [(&str, &str); 3] = [
    (
        "ladder",
        "ALTER TABLE channels ADD COLUMN ladder TEXT NOT NULL DEFAULT 'standard'",
    ),
    (
        "private",
        "ALTER TABLE channels ADD COLUMN private INTEGER NOT NULL DEFAULT 0",
    ),
    policy::MIGRATION,
];

/// Longest viewer id a playback token may carry, as the managed service allows.
pub const MAX_VIEWER_ID: usize = 40;

/// Longest accepted channel name, in characters.
const MAX_NAME: usize = 200;

impl Registry {
    /// Opens (creating if needed) `channels.sqlite3` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("channels.sqlite3");
        let db = |source| RegistryError::Db {
            path: path.clone(),
            source,
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
        let conn = Connection::open(&path).map_err(db)?;
        // The node and the CLI may write at the same moment; wait rather than fail.
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.execute_batch(sessions::SCHEMA).map_err(db)?;
        conn.execute_batch(recordings::SCHEMA).map_err(db)?;
        for (column, sql) in MIGRATIONS {
            let present: bool = conn
                .query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info('channels') WHERE name = ?1",
                    [column],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if !present {
                conn.execute_batch(sql).map_err(db)?;
            }
        }
        Ok(Registry {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn db(&self, source: rusqlite::Error) -> RegistryError {
        RegistryError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        // A panic while holding the lock cannot leave SQLite inconsistent, so
        // a poisoned lock is still safe to use.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| self.db(e))
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
        self.with(|c| {
            c.execute(
                "INSERT INTO channels (id, name, stream_key, created_at, ladder, private) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    channel.id,
                    channel.name,
                    channel.stream_key,
                    channel.created_at as i64,
                    channel.ladder,
                    channel.private
                ],
            )
        })?;
        Ok(channel)
    }

    pub fn list(&self) -> Result<Vec<Channel>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, stream_key, created_at, ladder, private FROM channels ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([], row_to_channel)?;
            rows.collect()
        })
    }

    pub fn get(&self, id: &str) -> Result<Channel> {
        self.with(|c| {
            c.query_row(
                "SELECT id, name, stream_key, created_at, ladder, private FROM channels WHERE id = ?1",
                [id],
                row_to_channel,
            )
            .optional()
        })?
        .ok_or_else(|| RegistryError::NotFound(id.to_string()))
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        match self.with(|c| c.execute("DELETE FROM channels WHERE id = ?1", [id]))? {
            0 => Err(RegistryError::NotFound(id.to_string())),
            _ => Ok(()),
        }
    }

    /// Replaces the channel's stream key; the old one stops working at once.
    pub fn rotate_key(&self, id: &str) -> Result<Channel> {
        let key = random_key();
        match self.with(|c| {
            c.execute(
                "UPDATE channels SET stream_key = ?1 WHERE id = ?2",
                params![key, id],
            )
        })? {
            0 => Err(RegistryError::NotFound(id.to_string())),
            _ => self.get(id),
        }
    }

    /// Makes a channel private (playback tokens required) or public; players
    /// see the change within the node's access refresh (about a second).
    pub fn set_private(&self, id: &str, private: bool) -> Result<Channel> {
        match self.with(|c| {
            c.execute(
                "UPDATE channels SET private = ?1 WHERE id = ?2",
                params![private, id],
            )
        })? {
            0 => Err(RegistryError::NotFound(id.to_string())),
            _ => self.get(id),
        }
    }

    /// Ids of the channels that need a playback token.
    pub fn private_channels(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT id FROM channels WHERE private != 0")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
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
        self.with(|c| {
            c.execute(
                "INSERT INTO playback_keys (id, public_pem, created_at) VALUES (?1, ?2, ?3)",
                params![key.id, key.public_pem, key.created_at as i64],
            )
        })?;
        Ok(key)
    }

    pub fn playback_keys(&self) -> Result<Vec<PlaybackKey>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, public_pem, created_at FROM playback_keys ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(PlaybackKey {
                    id: r.get(0)?,
                    public_pem: r.get(1)?,
                    created_at: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// Deletes a playback key: tokens it signed are refused from the next
    /// access refresh on.
    pub fn delete_playback_key(&self, id: &str) -> Result<()> {
        match self.with(|c| c.execute("DELETE FROM playback_keys WHERE id = ?1", [id]))? {
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
        self.with(|c| {
            c.execute(
                "INSERT INTO revoked_viewers (viewer_id, revoked_at) VALUES (?1, ?2) \
                 ON CONFLICT(viewer_id) DO UPDATE SET revoked_at = excluded.revoked_at",
                params![rev.viewer_id, rev.revoked_at as i64],
            )
        })?;
        Ok(rev)
    }

    pub fn revocations(&self) -> Result<Vec<Revocation>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT viewer_id, revoked_at FROM revoked_viewers ORDER BY revoked_at, viewer_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Revocation {
                    viewer_id: r.get(0)?,
                    revoked_at: r.get::<_, i64>(1)?.max(0) as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// The channel whose stream key is `key`. Every stored key is compared in
    /// constant time, so response timing says nothing about how close a guess was.
    pub fn find_by_key(&self, key: &str) -> Result<Option<Channel>> {
        let mut found = None;
        for ch in self.list()? {
            let eq = ch.stream_key.as_bytes().ct_eq(key.as_bytes());
            if bool::from(eq) {
                found = Some(ch);
            }
        }
        Ok(found)
    }
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

fn row_to_channel(r: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        id: r.get(0)?,
        name: r.get(1)?,
        stream_key: r.get(2)?,
        created_at: r.get::<_, i64>(3)?.max(0) as u64,
        ladder: r.get(4)?,
        private: r.get(5)?,
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
        let conn = Connection::open(dir.path().join("channels.sqlite3")).expect("open");
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
