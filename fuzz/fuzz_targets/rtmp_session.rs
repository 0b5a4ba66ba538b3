//! Fuzzes `rungs::ingest::rtmp::session::PublishSession::feed` with an arbitrary peer byte stream cut into fuzzer-chosen reads.
//!
//! Input layout (so that a raw capture needs only a one-byte prefix):
//! - byte 0, flags: low nibble `n` = how many read lengths follow; `0x10` = the harness feeds a
//!   canned RTMP handshake (C0, C1 and C2 of zeros, the original-spec handshake) first, so the
//!   rest is the post-handshake chunk stream; `0x20` = answer a publish request with
//!   `refuse_publish` instead of `accept_publish`.
//! - then `n` big-endian u16 read lengths, used in turn (cyclically; 0 counts as 1). With
//!   `n == 0` the whole stream is one read.
//! - then the bytes the peer sends.
//!
//! Besides "never panics" it checks what the session documents: an error is final (every
//! later call is `Closed`), media flows only after the publish was accepted, and a track's
//! packets only after that track's configuration.
//!
//! A panic inside rml_rtmp that the session catches (`RtmpError::LibraryPanic`) still aborts
//! here, because libfuzzer-sys's panic hook aborts on any panic: such a panic is a hole in
//! `guard.rs`. Set `RUNGS_FUZZ_CAUGHT_PANICS=ignore` to let those through and only fail when a
//! panic escapes `PublishSession`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rungs::ingest::rtmp::session::{PublishSession, RtmpError, SessionEvent};
use rungs::media::{IngestEvent, TrackKind, VideoEvent};
use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, Once, OnceLock};

const HANDSHAKE_FLAG: u8 = 0x10;
const REFUSE_FLAG: u8 = 0x20;
/// C0 (version 3), C1 and C2: 1536 zero bytes each.
const HANDSHAKE_LEN: usize = 1 + 2 * 1536;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("RUNGS_FUZZ_CAUGHT_PANICS").as_deref() == Ok("ignore") {
            // Replaces libfuzzer-sys's aborting hook: remember the message, and let
            // `PublishSession`'s own catch_unwind do its job.
            std::panic::set_hook(Box::new(|info| {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            }));
        }
    });
}

fn trace(what: &str, r: &Result<Vec<SessionEvent>, RtmpError>) {
    static TRACE: OnceLock<bool> = OnceLock::new();
    if *TRACE.get_or_init(|| std::env::var_os("RUNGS_FUZZ_TRACE").is_some()) {
        eprintln!("{what}: {r:?}");
    }
}

/// In `ignore` mode: prints a caught panic the first time its site is seen.
fn note_caught_panic() {
    static SITES: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let Some(msg) = LAST_PANIC.with(|p| p.borrow_mut().take()) else {
        return;
    };
    let site = msg.lines().next().unwrap_or_default().to_owned();
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    if sites.get_or_insert_with(HashSet::new).insert(site) {
        eprintln!("caught panic (new site): {msg}");
    }
}

/// Runs `f`; a panic that escapes it aborts with the panic's message.
fn no_escape<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            eprintln!("panic escaped PublishSession::{what}: {msg}");
            std::process::abort();
        }
    }
}

#[derive(Default)]
struct Seen {
    accepted: bool,
    video_config: bool,
    audio_config: bool,
    /// Further video tracks configured.
    tracks: std::collections::BTreeSet<u8>,
}

impl Seen {
    fn check(&mut self, events: &[SessionEvent]) -> bool {
        let mut publish_requested = false;
        for e in events {
            match e {
                SessionEvent::Send(b) => assert!(!b.is_empty(), "empty Send"),
                SessionEvent::PublishRequested { .. } => publish_requested = true,
                SessionEvent::Media(m) => {
                    assert!(
                        self.accepted,
                        "media before the publish was accepted: {m:?}"
                    );
                    match m {
                        IngestEvent::VideoConfig(_) => self.video_config = true,
                        IngestEvent::AudioConfig(_) => self.audio_config = true,
                        IngestEvent::Track { id, event } => {
                            assert_ne!(*id, 0, "track 0 travels as plain video events");
                            match event {
                                VideoEvent::Config(_) => {
                                    self.tracks.insert(*id);
                                }
                                VideoEvent::Packet(p) => {
                                    assert!(!p.data.is_empty(), "empty packet");
                                    assert!(self.tracks.contains(id), "track before its config");
                                }
                            }
                        }
                        IngestEvent::Packet(p) => {
                            assert!(!p.data.is_empty(), "empty packet");
                            match p.track {
                                TrackKind::Video => {
                                    assert!(self.video_config, "video before config")
                                }
                                TrackKind::Audio => {
                                    assert!(self.audio_config, "audio before config")
                                }
                            }
                        }
                    }
                }
                SessionEvent::ConnectRefused { .. } | SessionEvent::PublishFinished => {}
            }
        }
        publish_requested
    }
}

fuzz_target!(|input: &[u8]| {
    setup();
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(flags & 0x0f);
    if rest.len() < 2 * n {
        return;
    }
    let (lens, stream) = rest.split_at(2 * n);
    let lens: Vec<usize> = lens
        .chunks_exact(2)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])).max(1))
        .collect();

    let mut session = PublishSession::new();
    let mut seen = Seen::default();
    if flags & HANDSHAKE_FLAG != 0 {
        let mut hs = vec![0u8; HANDSHAKE_LEN];
        hs[0] = 3;
        let r = no_escape("feed", || session.feed(&hs));
        trace("handshake", &r);
        let events = r.expect("canned handshake");
        seen.check(&events);
    }

    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let len = if lens.is_empty() {
            stream.len()
        } else {
            lens[i % lens.len()]
        };
        i += 1;
        let chunk = &stream[pos..stream.len().min(pos + len)];
        pos += chunk.len();
        let r = no_escape("feed", || session.feed(chunk));
        trace("feed", &r);
        match r {
            Ok(events) => {
                if seen.check(&events) {
                    let answer = if flags & REFUSE_FLAG != 0 {
                        no_escape("refuse_publish", || session.refuse_publish("fuzz"))
                    } else {
                        seen.accepted = true;
                        no_escape("accept_publish", || session.accept_publish())
                    };
                    trace("answer", &answer);
                    if let Err(RtmpError::LibraryPanic { .. }) = &answer {
                        note_caught_panic();
                    }
                    if let Ok(events) = answer {
                        seen.check(&events);
                    }
                }
            }
            Err(e) => {
                if matches!(e, RtmpError::LibraryPanic { .. }) {
                    note_caught_panic();
                }
                let _ = e.to_string();
                let _ = e.unsupported_codec();
                // An error is final.
                let again = no_escape("feed", || session.feed(b"\x03"));
                assert!(
                    matches!(again, Err(RtmpError::Closed)),
                    "feed after an error: {again:?}"
                );
                return;
            }
        }
    }
    let _ = session.dropped_before_config();
});
