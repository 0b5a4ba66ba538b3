//! The two databases behind the registry, SQLite (a file in the data dir,
//! one node) and PostgreSQL (shared by a fleet), behind one small layer:
//! SQL is written once with `$1..$N` placeholders and a `now_ms()` for the
//! database's clock, arguments are [`Param`]s and rows come back as
//! [`Row`]s of backend-neutral values. Where the SQL really differs (DDL,
//! identity columns) the two versions sit side by side in `schema.rs`.
//!
//! Blocking only: the `postgres` client drives its connection on a runtime
//! of its own and panics when called on a thread that already drives an
//! async runtime. Registry calls belong on blocking threads
//! (`spawn_blocking`, the hub's channel threads, the session journal, the
//! CLI). A call made on an async thread all the same (a start-up read inside
//! `block_on`) is moved off it ([`off_the_runtime`]) rather than panicking,
//! but it still holds that thread for the call's length.
//!
//! A PostgreSQL connection that closed (a server restart, a network cut) is
//! replaced by a new one on the next call, and a call that failed before
//! its commit because the connection went is run once more on the new one.
//! The URL's password never appears in an error or a log: only
//! [`crate::config::redact_url`]'s form of the URL does.

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long opening a PostgreSQL connection may take unless the URL says
/// (`connect_timeout`): a registry that does not answer fails the call
/// rather than hanging the thread that made it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacknowledged data older than this ends a PostgreSQL connection, and
/// an idle one is probed this often: a server gone without a FIN (host
/// down, network cut) is noticed rather than waited on for ever.
const DEAD_PEER: Duration = Duration::from_secs(30);
/// Times a PostgreSQL transaction that lost a race (serialization failure,
/// deadlock) is run again before the error is returned.
const SERIAL_RETRIES: u32 = 5;

/// What went wrong in the database. Its text never holds a secret: no
/// password (the URL is redacted) and no row values (a PostgreSQL error's
/// DETAIL, which may quote a stream key, is left out).
#[derive(thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// Kept whole for its kind and code, shown by [`pg_message`] only.
    #[error("{}", pg_message(.0))]
    Postgres(postgres::Error),
    /// A column that does not hold what the registry wrote there.
    #[error("reading a row: {0}")]
    Decode(String),
    /// The call cannot be made as asked (a claim without a lease, an empty
    /// node id, a URL that is not one).
    #[error("{0}")]
    Precondition(String),
}

/// By hand: the derived form would print a PostgreSQL error's DETAIL.
impl std::fmt::Debug for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sqlite(e) => f.debug_tuple("Sqlite").field(e).finish(),
            DbError::Postgres(e) => f.debug_tuple("Postgres").field(&pg_message(e)).finish(),
            DbError::Decode(s) => f.debug_tuple("Decode").field(s).finish(),
            DbError::Precondition(s) => f.debug_tuple("Precondition").field(s).finish(),
        }
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

/// A PostgreSQL error without its DETAIL, HINT or WHERE: severity, SQLSTATE
/// and message, or the client's own description.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => {
            // The client's errors carry their cause (an I/O error, a
            // timeout) but never the connection's configuration.
            let mut s = e.to_string();
            if let Some(cause) = std::error::Error::source(e)
                && !s.contains(&cause.to_string())
            {
                s = format!("{s}: {cause}");
            }
            s
        }
    }
}

impl DbError {
    /// The connection is gone (closed, reset, or the server shutting down):
    /// a new connection may succeed where this one cannot.
    fn connection_lost(&self) -> bool {
        let DbError::Postgres(e) = self else {
            return false;
        };
        if e.is_closed() {
            return true;
        }
        if let Some(code) = e.code() {
            // Class 57P: admin_shutdown, crash_shutdown, cannot_connect_now.
            return code.code().starts_with("57P");
        }
        std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>())
    }

    /// A statement this connection prepared no longer fits the table (its
    /// result type changed under a newer schema) or is gone (a pooler
    /// reset the session): prepare the statements again.
    fn stale_statement(&self) -> bool {
        let DbError::Postgres(e) = self else {
            return false;
        };
        matches!(e.code().map(|c| c.code()), Some("0A000" | "26000"))
    }

    /// PostgreSQL rolled the transaction back because a concurrent one won:
    /// running it again on a fresh snapshot is the documented answer.
    fn lost_race(&self) -> bool {
        let DbError::Postgres(e) = self else {
            return false;
        };
        matches!(e.code().map(|c| c.code()), Some("40001" | "40P01"))
    }
}

/// How a registry call uses the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Each statement on its own (autocommit): reads.
    Read,
    /// One transaction. SQLite takes its write lock at the start
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes
    /// never fails to upgrade its lock; PostgreSQL runs READ COMMITTED.
    Write,
    /// One transaction that sees one snapshot and fails rather than act on
    /// a row another transaction changed meanwhile (PostgreSQL REPEATABLE
    /// READ, run again when it loses a race); SQLite as [`Mode::Write`],
    /// which already holds every other writer off.
    Snapshot,
}

/// Which database; SQL fragments that differ are picked by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Sqlite,
    Postgres,
}

impl Kind {
    /// The database's clock as unix milliseconds. For SQLite the database's
    /// clock is this host's; for PostgreSQL it is the server's, the one
    /// clock every node of a fleet shares.
    fn now_ms(self) -> &'static str {
        match self {
            Kind::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Kind::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// A statement argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Bool(bool),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// `args![a, b]`: the statement arguments `$1, $2`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::registry::db::Param::from($v)),*]
    };
}
pub(super) use args;

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(v),
            Param::Real(v) => ValueRef::Real(v),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            // SQLite has no boolean type: 0 and 1, as rusqlite writes bool.
            Param::Bool(b) => ValueRef::Integer(i64::from(b)),
        }))
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // PostgreSQL typed the parameter from the statement; an integer
        // goes to whatever integer width the column has.
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Param::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Param::Int(v) if *ty == Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
            Param::Int(v) if *ty == Type::FLOAT8 => (v as f64).to_sql(ty, out),
            Param::Real(v) if *ty == Type::FLOAT4 => (v as f32).to_sql(ty, out),
            Param::Real(v) => v.to_sql(ty, out),
            Param::Text(s) => s.to_sql(ty, out),
            Param::Bool(b) => b.to_sql(ty, out),
            Param::Int(_) => Err(format!("an integer for a parameter of type {ty}").into()),
        }
    }

    // Each variant checks the type itself in `to_sql`.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's value as read.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// One row of a result, its columns in the order the query names them.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Row(Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0
            .get(i)
            .ok_or_else(|| DbError::Decode(format!("no column {i}")))
    }

    /// Names what the column holds, never its value (it may be a secret).
    fn wrong(&self, i: usize, wanted: &str) -> DbError {
        let held = match self.0.get(i) {
            None => "missing",
            Some(Value::Null) => "NULL",
            Some(Value::Int(_)) => "an integer",
            Some(Value::Real(_)) => "a real",
            Some(Value::Text(_)) => "text",
            Some(Value::Bool(_)) => "a boolean",
        };
        DbError::Decode(format!("column {i} is {held}, not {wanted}"))
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        self.opt_int(i)?.ok_or_else(|| self.wrong(i, "an integer"))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            _ => Err(self.wrong(i, "an integer")),
        }
    }

    /// A count or time that cannot be negative, read as unsigned.
    pub fn unsigned(&self, i: usize) -> Result<u64, DbError> {
        Ok(self.int(i)?.max(0) as u64)
    }

    pub fn opt_real(&self, i: usize) -> Result<Option<f64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Real(v) => Ok(Some(*v)),
            // SQLite keeps a REAL column's whole numbers as integers.
            Value::Int(v) => Ok(Some(*v as f64)),
            _ => Err(self.wrong(i, "a number")),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?.ok_or_else(|| self.wrong(i, "text"))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.wrong(i, "text")),
        }
    }

    pub fn bool(&self, i: usize) -> Result<bool, DbError> {
        match self.at(i)? {
            Value::Bool(b) => Ok(*b),
            // SQLite: 0 and 1.
            Value::Int(v) => Ok(*v != 0),
            _ => Err(self.wrong(i, "a boolean")),
        }
    }
}

/// Statements on one open database (a connection, or a transaction on it).
pub(super) enum Db<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres {
        exec: &'a mut dyn PgExec,
        /// Statements prepared on this connection, by their SQL.
        stmts: &'a mut HashMap<String, postgres::Statement>,
    },
}

impl Db<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Db::Sqlite(_) => Kind::Sqlite,
            Db::Postgres { .. } => Kind::Postgres,
        }
    }

    /// `sql` as this database takes it: `now_ms()` replaced by the clock
    /// expression and, for SQLite, `$N` by `?N` (SQLite reads `$1` as a
    /// *named* parameter numbered by first appearance, not by N).
    fn render<'s>(&self, sql: &'s str) -> Cow<'s, str> {
        let kind = self.kind();
        let sql: Cow<'s, str> = if sql.contains("now_ms()") {
            Cow::Owned(sql.replace("now_ms()", kind.now_ms()))
        } else {
            Cow::Borrowed(sql)
        };
        if kind == Kind::Postgres || !sql.contains('$') {
            return sql;
        }
        let mut out = String::with_capacity(sql.len());
        let mut quoted = false;
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => quoted = !quoted,
                '$' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => {
                    out.push('?');
                    continue;
                }
                _ => {}
            }
            out.push(c);
        }
        Cow::Owned(out)
    }

    /// Runs a statement; the number of rows it changed.
    pub fn exec(&mut self, sql: &str, args: &[Param<'_>]) -> Result<u64, DbError> {
        let sql = self.render(sql);
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(&sql)?;
                Ok(st.execute(rusqlite::params_from_iter(args.iter()))? as u64)
            }
            Db::Postgres { exec, stmts } => {
                let st = prepared(*exec, stmts, &sql)?;
                Ok(exec.execute(&st, &pg_args(args))?)
            }
        }
    }

    /// Runs a query; every row.
    pub fn query(&mut self, sql: &str, args: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let sql = self.render(sql);
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(&sql)?;
                let columns = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(columns);
                    for i in 0..columns {
                        values.push(match r.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(v) => Value::Int(v),
                            ValueRef::Real(v) => Value::Real(v),
                            ValueRef::Text(t) => {
                                Value::Text(String::from_utf8(t.to_vec()).map_err(|_| {
                                    DbError::Decode(format!("column {i}: not UTF-8"))
                                })?)
                            }
                            ValueRef::Blob(_) => {
                                return Err(DbError::Decode(format!("column {i} is a blob")));
                            }
                        });
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
            Db::Postgres { exec, stmts } => {
                let st = prepared(*exec, stmts, &sql)?;
                exec.query(&st, &pg_args(args))?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    }

    /// The first row, if any.
    pub fn query_opt(&mut self, sql: &str, args: &[Param<'_>]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row; a query that returns none is a decode error.
    pub fn query_one(&mut self, sql: &str, args: &[Param<'_>]) -> Result<Row, DbError> {
        self.query_opt(sql, args)?
            .ok_or_else(|| DbError::Decode("the query returned no row".into()))
    }

    /// Runs several statements without arguments (DDL), ignoring any rows.
    pub fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let sql = self.render(sql);
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(&sql)?),
            Db::Postgres { exec, .. } => Ok(exec.batch(&sql)?),
        }
    }
}

fn pg_args<'p>(args: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

fn prepared(
    exec: &mut dyn PgExec,
    stmts: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> Result<postgres::Statement, DbError> {
    if let Some(st) = stmts.get(sql) {
        return Ok(st.clone());
    }
    let st = exec.prepare(sql)?;
    stmts.insert(sql.to_string(), st.clone());
    Ok(st)
}

fn pg_row(r: &postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *t == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into()))
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(Value::Bool)
        } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(t) {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else {
            return Err(DbError::Decode(format!(
                "column {} has type {t}, which the registry does not read",
                col.name()
            )));
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// What [`Db`] needs of a PostgreSQL connection or transaction (the
/// client's own `GenericClient` is generic, so not usable as an object).
pub(super) trait PgExec {
    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error>;
    fn execute(
        &mut self,
        st: &postgres::Statement,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error>;
    fn query(
        &mut self,
        st: &postgres::Statement,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error>;
    fn batch(&mut self, sql: &str) -> Result<(), postgres::Error>;
}

impl PgExec for postgres::Client {
    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        postgres::Client::prepare(self, sql)
    }
    fn execute(
        &mut self,
        st: &postgres::Statement,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        postgres::Client::execute(self, st, args)
    }
    fn query(
        &mut self,
        st: &postgres::Statement,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        postgres::Client::query(self, st, args)
    }
    fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        postgres::Client::batch_execute(self, sql)
    }
}

impl PgExec for postgres::Transaction<'_> {
    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        postgres::Transaction::prepare(self, sql)
    }
    fn execute(
        &mut self,
        st: &postgres::Statement,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        postgres::Transaction::execute(self, st, args)
    }
    fn query(
        &mut self,
        st: &postgres::Statement,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        postgres::Transaction::query(self, st, args)
    }
    fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        postgres::Transaction::batch_execute(self, sql)
    }
}

/// An open registry database.
pub(super) enum Backend {
    Sqlite {
        path: PathBuf,
        /// One connection, one call at a time: SQLite serializes writers
        /// anyway, and every call is short.
        conn: Mutex<rusqlite::Connection>,
    },
    /// Boxed: its client configuration is large, and only one backend is
    /// ever open.
    Postgres(Box<Pg>),
}

pub(super) struct Pg {
    /// The URL with its password redacted: what errors and logs show.
    shown: String,
    config: postgres::Config,
    /// `None` until the first call, and after a connection was found lost.
    conn: Mutex<Option<PgConn>>,
}

struct PgConn {
    client: postgres::Client,
    stmts: HashMap<String, postgres::Statement>,
}

/// Where a failure happened: a failed COMMIT leaves it unknown whether the
/// transaction took effect, so it is never run again on its own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Body,
    Commit,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic mid-call leaves no half-applied state behind: SQLite rolls an
    // unfinished transaction back when it is dropped, and a PostgreSQL
    // transaction dropped without commit is rolled back too.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backend {
    /// A PostgreSQL backend for `url` (`postgres://` or `postgresql://`);
    /// nothing is connected yet.
    pub fn postgres(url: &str) -> Result<Backend, DbError> {
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            // The parser names the option it could not read, never a value.
            DbError::Precondition(format!("not a usable PostgreSQL URL: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(DEAD_PEER);
        }
        config.keepalives(true).keepalives_idle(DEAD_PEER);
        if config.get_application_name().is_none() {
            config.application_name("rungs");
        }
        Ok(Backend::Postgres(Box::new(Pg {
            shown: crate::logging::redact_url(url),
            config,
            conn: Mutex::new(None),
        })))
    }

    pub fn sqlite(path: PathBuf, conn: rusqlite::Connection) -> Backend {
        Backend::Sqlite {
            path,
            conn: Mutex::new(conn),
        }
    }

    /// The database as errors and logs name it: the SQLite file, or the
    /// PostgreSQL URL without its password.
    pub fn location(&self) -> String {
        match self {
            Backend::Sqlite { path, .. } => path.display().to_string(),
            Backend::Postgres(pg) => pg.shown.clone(),
        }
    }

    /// Runs `f` in `mode`. PostgreSQL: connects first if needed; runs `f`
    /// again on a new connection when the old one was lost before the
    /// commit, and on a fresh snapshot when a concurrent transaction won a
    /// race; `f` must therefore only touch the database.
    pub fn run<T: Send>(
        &self,
        mode: Mode,
        mut f: impl FnMut(&mut Db<'_>) -> Result<T, DbError> + Send,
    ) -> Result<T, DbError> {
        match self {
            Backend::Sqlite { conn, .. } => {
                let mut conn = lock(conn);
                if mode == Mode::Read {
                    return f(&mut Db::Sqlite(&conn));
                }
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let v = f(&mut Db::Sqlite(&tx))?;
                tx.commit()?;
                Ok(v)
            }
            Backend::Postgres(pg) => off_the_runtime(|| pg.run(mode, &mut f)),
        }
    }
}

/// Runs `work`, which blocks in the `postgres` client, where that cannot
/// panic: at once on a thread outside any async runtime, through
/// `block_in_place` under a multi-threaded runtime (which runs it at once
/// on the blocking pool, and moves the worker's tasks away on a worker
/// thread), and on a thread of its own under a current-thread runtime,
/// which cannot lend its only thread.
fn off_the_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => work(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        Ok(_) => std::thread::scope(|s| s.spawn(work).join())
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
    }
}

impl Pg {
    fn connect(&self) -> Result<PgConn, DbError> {
        let client = self.config.connect(postgres::NoTls)?;
        Ok(PgConn {
            client,
            stmts: HashMap::new(),
        })
    }

    fn run<T>(
        &self,
        mode: Mode,
        f: &mut impl FnMut(&mut Db<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut guard = lock(&self.conn);
        let mut reconnected = false;
        let mut replanned = false;
        let mut races = 0;
        loop {
            let conn = match &mut *guard {
                Some(c) if !c.client.is_closed() => c,
                slot => {
                    if slot.is_some() {
                        tracing::info!(registry = %self.shown, "registry connection closed; reconnecting");
                    }
                    *slot = None;
                    slot.insert(self.connect()?)
                }
            };
            let (error, stage) = match once(conn, mode, f) {
                Ok(v) => return Ok(v),
                Err(failure) => failure,
            };
            let lost = error.connection_lost() || conn.client.is_closed();
            if !lost && error.stale_statement() && stage == Stage::Body && !replanned {
                conn.stmts.clear();
                replanned = true;
                continue;
            }
            if lost {
                *guard = None;
            }
            if lost && stage == Stage::Body && !reconnected {
                tracing::warn!(registry = %self.shown, error = %error, "registry connection lost; trying once more on a new one");
                reconnected = true;
                continue;
            }
            if error.lost_race() && races < SERIAL_RETRIES {
                races += 1;
                continue;
            }
            return Err(error);
        }
    }
}

/// One attempt of `f` on `c`.
fn once<T>(
    c: &mut PgConn,
    mode: Mode,
    f: &mut impl FnMut(&mut Db<'_>) -> Result<T, DbError>,
) -> Result<T, (DbError, Stage)> {
    let PgConn { client, stmts } = c;
    let body = |e: DbError| (e, Stage::Body);
    let mut tx = match mode {
        Mode::Read => {
            return f(&mut Db::Postgres {
                exec: client,
                stmts,
            })
            .map_err(body);
        }
        Mode::Write => client.transaction(),
        Mode::Snapshot => client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start(),
    }
    .map_err(|e| body(e.into()))?;
    let v = f(&mut Db::Postgres {
        exec: &mut tx,
        stmts,
    })
    .map_err(body)?;
    tx.commit().map_err(|e| (e.into(), Stage::Commit))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls_lose_their_password() {
        use crate::logging::redact_url;
        assert_eq!(
            redact_url("postgres://rungs:s3cret@db:5432/rungs"),
            "postgres://rungs:<redacted>@db:5432/rungs"
        );
        assert_eq!(
            redact_url("postgresql://rungs@db/rungs?sslmode=disable&password=s3cret"),
            "postgresql://rungs@db/rungs?sslmode=<redacted>&password=<redacted>"
        );
        // A password holding '@' or ':' (percent-encoded or not) goes whole.
        assert_eq!(
            redact_url("postgres://u:p@ss:w@rd@h/d"),
            "postgres://u:<redacted>@h/d"
        );
        assert_eq!(redact_url("postgres://h/d"), "postgres://h/d");
        assert_eq!(redact_url(""), "");
    }

    #[test]
    fn sqlite_reads_dollar_placeholders_by_number() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        let db = Db::Sqlite(&conn);
        assert_eq!(
            db.render("SELECT $2, '$1', $10 WHERE x = $1"),
            "SELECT ?2, '$1', ?10 WHERE x = ?1"
        );
        let mut db = Db::Sqlite(&conn);
        let row = db
            .query_one("SELECT $2, $1, now_ms() > 0", args!["a", 7])
            .expect("query");
        assert_eq!(row.int(0).expect("int"), 7);
        assert_eq!(row.text(1).expect("text"), "a");
        assert!(row.bool(2).expect("bool"));
    }
}
