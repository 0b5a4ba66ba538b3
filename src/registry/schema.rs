//! The registry's schema and its versions, applied when a registry opens:
//! `schema_version` holds one row per version applied, and each version
//! is written for SQLite and for PostgreSQL side by side.
//!
//! Version 1 is the schema as it stood before versions were kept. On
//! SQLite it also upgrades every database an earlier release made (tables
//! created if missing, columns added if missing), so a node's existing
//! file opens as it always did. On PostgreSQL it creates the same tables
//! from empty. Every step may run again over its own result without harm,
//! so a version row lost or never written only costs a re-run.
//!
//! Two nodes opening one empty PostgreSQL database at the same moment do
//! not race: the migration runs in one transaction holding an advisory
//! lock, so the second waits and then finds the work done. On SQLite the
//! transaction holds the write lock from its start, which does the same.

use super::db::{Db, DbError, Kind, args};

/// The newest version this build knows.
pub(super) const LATEST: i64 = 3;

/// `pg_advisory_xact_lock` key of the migration: "rungs" in ASCII.
const MIGRATION_LOCK: i64 = 0x72_75_6e_67_73;

/// Brings the schema up to [`LATEST`]; call it inside one write
/// transaction. Returns the version found before.
pub(super) fn migrate(db: &mut Db<'_>) -> Result<i64, DbError> {
    if db.kind() == Kind::Postgres {
        db.batch(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
    }
    db.batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version        BIGINT PRIMARY KEY,
            applied_at_ms  BIGINT NOT NULL
        )",
    )?;
    let found = version(db)?;
    if found > LATEST {
        // A newer node migrated a shared database during a rolling
        // upgrade. Versions only add, so this build's queries still work.
        tracing::warn!(
            found,
            known = LATEST,
            "registry schema is newer than this build; opening it as is"
        );
    }
    for v in (found + 1)..=LATEST {
        match (v, db.kind()) {
            (1, Kind::Sqlite) => sqlite_v1(db)?,
            (1, Kind::Postgres) => db.batch(POSTGRES_V1)?,
            (2, Kind::Sqlite) => sqlite_v2(db)?,
            (2, Kind::Postgres) => db.batch(POSTGRES_V2)?,
            (3, Kind::Sqlite) => db.batch(&sqlite_v3())?,
            (3, Kind::Postgres) => db.batch(&postgres_v3())?,
            _ => unreachable!("every version up to LATEST has a step per backend"),
        }
        db.exec(
            "INSERT INTO schema_version (version, applied_at_ms) VALUES ($1, now_ms())",
            args![v],
        )?;
    }
    Ok(found)
}

/// The newest version applied; 0 for a database that has none recorded.
pub(super) fn version(db: &mut Db<'_>) -> Result<i64, DbError> {
    db.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
        .int(0)
}

/// Adds `column` to `table` with `ddl` unless it is there (SQLite has no
/// `ADD COLUMN IF NOT EXISTS`). True when it was added.
fn add_sqlite_column(
    db: &mut Db<'_>,
    table: &str,
    column: &str,
    ddl: &str,
) -> Result<bool, DbError> {
    let present = db
        .query_one(
            "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2",
            args![table, column],
        )?
        .int(0)?
        > 0;
    if !present {
        db.batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ddl}"))?;
    }
    Ok(!present)
}

// ---- Version 1: channels, playback keys, revocations, sessions, recordings.

/// The tables as releases before versioning created them, verbatim.
const SQLITE_V1: &str = "
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
CREATE TABLE IF NOT EXISTS stream_sessions (
    -- AUTOINCREMENT: a pruned session's id is never given to a new one.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id      TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    end_reason      TEXT,
    -- JSON: the ingest configuration as last received.
    ingest          TEXT,
    events          INTEGER NOT NULL DEFAULT 0,
    events_dropped  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS stream_sessions_by_channel ON stream_sessions (channel_id, id);
CREATE TABLE IF NOT EXISTS session_events (
    session_id  INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_by_session ON session_events (session_id, at);
CREATE TABLE IF NOT EXISTS recordings (
    channel_id  TEXT NOT NULL,
    -- The session folder: the UTC start, ISO 8601 basic form.
    session     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    duration_s  REAL,
    bytes       INTEGER,
    recovered   INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    PRIMARY KEY (channel_id, session)
);
";

/// Columns the first releases added to `channels` one by one.
const SQLITE_V1_CHANNEL_COLUMNS: [(&str, &str); 3] = [
    ("ladder", "TEXT NOT NULL DEFAULT 'standard'"),
    ("private", "INTEGER NOT NULL DEFAULT 0"),
    // One JSON column, so that a rule added later needs no migration.
    ("policy", "TEXT NOT NULL DEFAULT '{}'"),
];

fn sqlite_v1(db: &mut Db<'_>) -> Result<(), DbError> {
    db.batch(SQLITE_V1)?;
    for (column, ddl) in SQLITE_V1_CHANNEL_COLUMNS {
        add_sqlite_column(db, "channels", column, ddl)?;
    }
    Ok(())
}

/// The same tables on PostgreSQL: 64-bit integers, real booleans, and ids
/// that sort bytewise (`COLLATE "C"`) as they do on SQLite.
const POSTGRES_V1: &str = r#"
CREATE TABLE IF NOT EXISTS channels (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    stream_key  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    ladder      TEXT NOT NULL DEFAULT 'standard',
    private     BOOLEAN NOT NULL DEFAULT FALSE,
    policy      TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS playback_keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    public_pem  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_viewers (
    viewer_id   TEXT COLLATE "C" PRIMARY KEY,
    revoked_at  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_sessions (
    -- An identity is never given out twice, as SQLite's AUTOINCREMENT.
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id      TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    ended_at        BIGINT,
    end_reason      TEXT,
    ingest          TEXT,
    events          BIGINT NOT NULL DEFAULT 0,
    events_dropped  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS stream_sessions_by_channel ON stream_sessions (channel_id, id);
CREATE TABLE IF NOT EXISTS session_events (
    session_id  BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS session_events_by_session ON session_events (session_id, at);
CREATE TABLE IF NOT EXISTS recordings (
    channel_id  TEXT NOT NULL,
    session     TEXT COLLATE "C" NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    duration_s  DOUBLE PRECISION,
    bytes       BIGINT,
    recovered   BOOLEAN NOT NULL DEFAULT FALSE,
    state       TEXT NOT NULL,
    PRIMARY KEY (channel_id, session)
);
"#;

// ---- Version 2: sessions know their node; the fleet's live map.

/// What both backends write the same way.
const SQLITE_V2: &str = "
CREATE INDEX IF NOT EXISTS stream_sessions_open_by_node
    ON stream_sessions (node_id) WHERE ended_at IS NULL;
-- One row per node; its lease is judged by the database's clock
-- (unix ms), since the nodes' own clocks may differ.
CREATE TABLE IF NOT EXISTS fleet_nodes (
    id             TEXT PRIMARY KEY,
    public_url     TEXT NOT NULL,
    region         TEXT NOT NULL,
    capacity       BIGINT NOT NULL,
    draining       BOOLEAN NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);
-- A channel live on a node lives as long as that node's lease.
CREATE TABLE IF NOT EXISTS live_channels (
    channel_id  TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS live_channels_by_node ON live_channels (node_id);
";

fn sqlite_v2(db: &mut Db<'_>) -> Result<(), DbError> {
    // Sessions from before nodes had ids belong to no node (''): any node
    // starting closes them, as a lone node always did.
    add_sqlite_column(db, "stream_sessions", "node_id", "TEXT NOT NULL DEFAULT ''")?;
    // An event's place within its session; events already written keep
    // their insertion order.
    if add_sqlite_column(db, "session_events", "seq", "INTEGER NOT NULL DEFAULT 0")? {
        db.batch("UPDATE session_events SET seq = rowid")?;
    }
    db.batch(SQLITE_V2)
}

const POSTGRES_V2: &str = r#"
ALTER TABLE stream_sessions ADD COLUMN IF NOT EXISTS node_id TEXT NOT NULL DEFAULT '';
ALTER TABLE session_events ADD COLUMN IF NOT EXISTS seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS stream_sessions_open_by_node
    ON stream_sessions (node_id) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS fleet_nodes (
    id             TEXT COLLATE "C" PRIMARY KEY,
    public_url     TEXT NOT NULL,
    region         TEXT NOT NULL,
    capacity       BIGINT NOT NULL,
    draining       BOOLEAN NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_channels (
    channel_id  TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS live_channels_by_node ON live_channels (node_id);
"#;

// ---- Version 3: a counter of changes to what access and hooks read.

/// The tables whose rows decide who may play and which hooks run: every
/// node re-reads them when [`access_generation`](super::Registry::access_generation)
/// moves, instead of reading all of them every second.
const ACCESS_TABLES: [&str; 3] = ["channels", "playback_keys", "revoked_viewers"];

/// Triggers, not the registry's own writes, move the counter: a change made
/// by an older node during a rolling upgrade, or by hand, moves it too.
fn sqlite_v3() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS access_generation (
            id     INTEGER PRIMARY KEY CHECK (id = 1),
            value  BIGINT NOT NULL
        );
        INSERT OR IGNORE INTO access_generation (id, value) VALUES (1, 0);\n",
    );
    for table in ACCESS_TABLES {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            sql.push_str(&format!(
                "CREATE TRIGGER IF NOT EXISTS {table}_{op}_access AFTER {op} ON {table} \
                 BEGIN UPDATE access_generation SET value = value + 1; END;\n",
                op = op.to_lowercase(),
            ));
        }
    }
    sql
}

/// One statement-level trigger per table (dropped first: `CREATE OR
/// REPLACE TRIGGER` needs PostgreSQL 14).
fn postgres_v3() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS access_generation (
            id     INT PRIMARY KEY CHECK (id = 1),
            value  BIGINT NOT NULL
        );
        INSERT INTO access_generation (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
        CREATE OR REPLACE FUNCTION rungs_access_changed() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            UPDATE access_generation SET value = value + 1;
            RETURN NULL;
        END
        $body$;\n",
    );
    for table in ACCESS_TABLES {
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS access_changed ON {table};
            CREATE TRIGGER access_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION rungs_access_changed();\n"
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::super::{NODE_RESTARTED, Registry};
    use super::*;

    /// A database exactly as the release before versions left it: every
    /// table, the channel columns, an open session with events.
    fn unversioned(dir: &std::path::Path) {
        let conn = rusqlite::Connection::open(dir.join("channels.sqlite3")).expect("open");
        conn.execute_batch(SQLITE_V1).expect("old tables");
        conn.execute_batch(
            "ALTER TABLE channels ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
             INSERT INTO channels (id, name, stream_key, created_at) VALUES ('c1', 'old', 'sk_old', 1);
             INSERT INTO stream_sessions (channel_id, protocol, started_at) VALUES ('c1', 'rtmp', 1000);
             INSERT INTO session_events VALUES (1, 2000, 'second', 'b');
             INSERT INTO session_events VALUES (1, 1500, 'first', 'a');
             INSERT INTO session_events VALUES (1, 2000, 'third', 'c');",
        )
        .expect("old rows");
    }

    #[test]
    fn an_unversioned_database_is_upgraded_and_keeps_its_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        unversioned(dir.path());
        let reg = Registry::open(dir.path()).expect("upgrade");
        assert_eq!(reg.schema_version().expect("version"), LATEST);
        let ch = reg.get("c1").expect("kept");
        assert_eq!(
            (ch.stream_key.as_str(), ch.ladder.as_str()),
            ("sk_old", "standard")
        );
        let s = &reg.sessions("c1", 10).expect("sessions")[0];
        let kinds: Vec<&str> = s.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["first", "second", "third"],
            "time, then insertion order"
        );
        // The old open session belonged to no node: a node starting closes it.
        let node = Registry::open_config(&Default::default(), dir.path(), "edge-1").expect("open");
        assert_eq!(node.close_interrupted_sessions(9_000).expect("close"), 1);
        let s = reg.last_session("c1").expect("last").expect("some");
        assert_eq!(s.end_reason.as_deref(), Some(NODE_RESTARTED));
        // A new event of an old session sorts after the old ones at the same time.
        reg.add_session_event(s.id, 2000, "fourth", "d")
            .expect("event");
        let s = &reg.sessions("c1", 10).expect("sessions")[0];
        assert_eq!(s.events.last().map(|e| e.kind.as_str()), Some("fourth"));
    }

    #[test]
    fn every_step_runs_again_over_its_own_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("open");
        let ch = reg.create("kept", "standard").expect("create");
        drop(reg);
        let conn = rusqlite::Connection::open(dir.path().join("channels.sqlite3")).expect("open");
        conn.execute_batch("DELETE FROM schema_version")
            .expect("forget");
        drop(conn);
        let reg = Registry::open(dir.path()).expect("re-run");
        assert_eq!(reg.schema_version().expect("version"), LATEST);
        assert_eq!(reg.get(&ch.id).expect("kept"), ch);
    }
}
