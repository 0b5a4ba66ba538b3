//! A PostgreSQL server for the registry tests: Debian's PostgreSQL (`initdb`, `pg_ctl`,
//! package `postgresql`) in a temporary directory, listening on 127.0.0.1 on a free port
//! (its Unix socket inside that directory, never in /run), with password authentication
//! (SCRAM) for the user `rungs` over TCP: the URL a test hands the registry carries a
//! password, as a real one does, so that its redaction is exercised.
//!
//! PostgreSQL refuses to run as root, and `make test` runs as root: then every server
//! command runs as the `postgres` system user (which the Debian package creates) through
//! `runuser`, in a directory that user owns. The server is stopped
//! (`pg_ctl stop -m immediate`) and its directory deleted on Drop; when a test panics,
//! the tail of the server's log is printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{free_port, tail};

const USER: &str = "rungs";
const PASSWORD: &str = "pg-test-pw-9f27c1";

pub struct PgServer {
    /// Removed on Drop, after the server is stopped.
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    port: u16,
    /// Whether server commands run as the `postgres` user (the tests run as root).
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL's initdb under /usr/lib/postgresql/*/bin: apt-get install postgresql")
}

/// Uid and gid of the `postgres` system user.
fn postgres_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .expect("a postgres system user (the postgresql package creates it)")
}

impl PgServer {
    /// Makes a cluster in a new temporary directory and starts it; returns once it
    /// accepts connections.
    pub fn start() -> PgServer {
        let bin = pg_bin();
        // SAFETY: geteuid only reads the process's credentials.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        // The postgres user must be able to reach the directory: /tmp, whatever TMPDIR
        // says, when the tests run as root.
        let mut builder = tempfile::Builder::new();
        builder.prefix("rungs-pg-");
        let dir = if as_postgres {
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .expect("temporary directory for PostgreSQL");
        let pwfile = dir.path().join("pw");
        fs::write(&pwfile, format!("{PASSWORD}\n")).expect("write the password file");
        if as_postgres {
            let (uid, gid) = postgres_user();
            for p in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", p.display()));
            }
        }
        let mut s = PgServer {
            dir: Some(dir),
            bin,
            port: 0,
            as_postgres,
        };
        let out = s
            .command("initdb")
            .arg("-D")
            .arg(s.data())
            .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        check(&out, "initdb");
        // A free port can be taken between our probe and the server's bind: try others.
        for attempt in 0..3 {
            s.port = free_port();
            let conf = format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 max_connections = 40\n",
                s.port,
                s.root().display()
            );
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(s.data().join("postgresql.conf"))
                .expect("open postgresql.conf");
            std::io::Write::write_all(&mut f, conf.as_bytes()).expect("write postgresql.conf");
            if s.pg_ctl_start(attempt < 2) {
                return s;
            }
        }
        unreachable!("the third attempt panics rather than retry");
    }

    fn root(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives until Drop")
            .path()
    }

    fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root().join("server.log")
    }

    /// A server tool, run as the postgres user when the tests run as root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // The postgres user cannot enter the tests' working directory.
        c.current_dir(self.root()).stdin(Stdio::null());
        c
    }

    /// Starts the server; false when it failed because its port was taken and the
    /// caller asked to retry.
    fn pg_ctl_start(&self, retry_on_addr_in_use: bool) -> bool {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if out.status.success() {
            return true;
        }
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        if retry_on_addr_in_use && log.contains("already in use") {
            return false;
        }
        check(&out, "pg_ctl start");
        unreachable!("check panics on failure")
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("run pg_ctl stop")
    }

    /// `postgres://rungs:<password>@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The password in [`Self::url`], for checking that it appears nowhere.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// A connection as the test user, for SQL the tests run themselves.
    pub fn client(&self, database: &str) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url(database), ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to database {database}: {e}"))
    }

    /// Creates an empty database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.url(name)
    }

    /// Stops the server as an operator's restart does (`-m fast`: sessions are
    /// terminated) and starts it again on the same port and data.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server (`-m fast`); its data stays for [`Self::start_again`].
    pub fn stop(&self) {
        check(&self.pg_ctl_stop("fast"), "pg_ctl stop");
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) {
        assert!(self.pg_ctl_start(false));
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.pg_ctl_stop("immediate");
        }
        if std::thread::panicking() {
            eprintln!(
                "===== PostgreSQL log ({}), last 40 lines =====\n{}",
                self.log_path().display(),
                tail(&self.log_path(), 40)
            );
        }
        // TempDir's Drop removes the directory (root may remove the postgres user's files;
        // a non-root run owns them).
        self.dir.take();
    }
}
