//! A fresh network namespace with only loopback up, for tests whose peers
//! must see no other interface: a WebRTC stack gathers ICE candidates on
//! every interface it finds, and in here the only one is `lo`, so every
//! candidate, check and packet stays on 127.0.0.1.
//!
//! [`Netns::new`] runs `ip netns add rungs-<pid>-<n>` and brings `lo` up;
//! Drop deletes it. [`Netns::run_in`] runs a closure on a thread that has
//! entered the namespace (`setns(2)` on `/run/netns/NAME`): every socket
//! that thread opens and every process it spawns (the node, Chromium,
//! python, ffmpeg) lives in the namespace, and threads it spawns inherit
//! it. The test's own main thread never leaves the host namespace.
//!
//! Needs root (CAP_SYS_ADMIN) and iproute2's `ip`. A test that uses this
//! says so in its name (`whip_netns_*`, `browser_whip_*`) and fails with a
//! message saying what is missing; it never skips.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A loopback-only network namespace, deleted on Drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `rungs-<pid>-<n>` with `lo` up. `test` names the caller in
    /// the panic message when that is impossible here.
    pub fn new(test: &str) -> Netns {
        remove_stale();
        let name = format!(
            "rungs-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let why = |what: &str| {
            format!(
                "{test} runs the node and its WebRTC peer in a loopback-only network namespace \
                 and needs root and iproute2 (`ip netns add`): {what}. Run it as root after \
                 `make deps` (which installs iproute2)."
            )
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "{}",
            why(&format!("running as uid {euid}, not root"))
        );
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("{}", why(&e)));
        // From here on Drop deletes the namespace, whatever happens next.
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]).unwrap_or_else(|e| panic!("{}", why(&e)));
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread inside the namespace and returns what it
    /// returns; a panic in `f` is re-raised here, with its message.
    pub fn run_in<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(s, move || {
                    let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    // SAFETY: `fd` is an open namespace file for the whole
                    // call; setns only changes this thread's namespace.
                    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert!(
                        rc == 0,
                        "setns({path}, CLONE_NEWNET): {} (needs root)",
                        std::io::Error::last_os_error()
                    );
                    drop(fd);
                    f()
                })
                .expect("spawn the namespace thread");
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The namespace's interfaces (`ip -o link` names), e.g. `["lo"]`.
    pub fn links(&self) -> Vec<String> {
        let out = ip(&["-n", &self.name, "-o", "link", "show"]).unwrap_or_else(|e| panic!("{e}"));
        out.lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            eprintln!("netns: {e}");
        }
    }
}

/// Runs `ip ARGS`, returning its stdout or a message with its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}): install iproute2"))?;
    if !out.status.success() {
        return Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes `rungs-<pid>-<n>` namespaces left by test processes that no
/// longer exist (killed before their Drop ran).
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name
            .strip_prefix("rungs-")
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}
