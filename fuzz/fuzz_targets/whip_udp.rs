//! Fuzzes the WHIP UDP demultiplexer, `rungs::ingest::whip::Demux`, with arbitrary datagrams
//! from a few source addresses: the STUN check that opens an address, the routing of known
//! addresses, and str0m's DTLS/RTP/RTCP input behind them, with time moving on between them.
//!
//! Two sessions run, negotiated from `tests/fixtures/whip/aiortc-1.16-offer.sdp`; the first
//! has the fixed ICE credentials `fuzzufrag` / `fuzzpassword0123456789abcd`, so a seed can
//! carry a binding request that opens its address (see `make_seeds.py`).
//!
//! `RUNGS_FUZZ_TRACE=1` prints the routes after each datagram (to replay one input).
//!
//! Input: datagrams one after another, each as one flags byte (bits 0-1: which of four
//! source addresses sends it; bits 2-4: milliseconds x 64 the clock moves on before it),
//! a big-endian u16 length, and the bytes (the last one takes what is left).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rungs::ingest::whip::{Demux, SessionTiming, negotiate};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use str0m::IceCreds;

const OFFER: &str = include_str!("../../tests/fixtures/whip/aiortc-1.16-offer.sdp");

fuzz_target!(|input: &[u8]| {
    let host: SocketAddr = ([127, 0, 0, 1], 8189).into();
    let peers: [SocketAddr; 4] = [
        ([127, 0, 0, 1], 50000).into(),
        ([127, 0, 0, 1], 50001).into(),
        ([10, 0, 0, 7], 50000).into(),
        ([127, 0, 0, 1], 8189).into(),
    ];
    let timing = SessionTiming {
        segment_target: Duration::from_secs(2),
        part_target: Duration::from_millis(200),
        idle: Duration::from_secs(10),
    };
    let shared = Arc::new(Mutex::new(HashMap::new()));
    let mut demux = Demux::new(vec![host], shared.clone(), timing);
    let mut media = Vec::new();
    let start = Instant::now();
    for (i, id) in ["a", "b"].into_iter().enumerate() {
        let (mut rtc, _) = negotiate(OFFER, &[host], start).expect("the fixture negotiates");
        if i == 0 {
            rtc.direct_api().set_local_ice_credentials(IceCreds {
                ufrag: "fuzzufrag".into(),
                pass: "fuzzpassword0123456789abcd".into(),
            });
        }
        let (tx, rx) = crossbeam_channel::bounded(256);
        media.push(rx);
        shared
            .lock()
            .expect("table")
            .insert(id.to_string(), "ch".to_string());
        demux.start(id.to_string(), "ch".to_string(), rtc, tx);
    }
    let mut now = start;
    let mut rest = input;
    while let [flags, rest_after_flags @ ..] = rest {
        let (data, tail) = match rest_after_flags {
            [a, b, tail @ ..] => {
                let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
                tail.split_at(n)
            }
            _ => (rest_after_flags, &[][..]),
        };
        rest = tail;
        now += Duration::from_millis(64 * u64::from((flags >> 2) & 7));
        let from = peers[usize::from(flags & 3)];
        demux.datagram(from, data);
        if demux.deadline().is_some_and(|d| d <= now) {
            demux.tick(now);
        }
        for t in demux.transmits().drain(..) {
            assert!(!t.data.is_empty(), "empty datagram to {}", t.to);
        }
        demux.reap();
        if std::env::var_os("RUNGS_FUZZ_TRACE").is_some() {
            eprintln!(
                "{from} {} bytes: routes {:?}",
                data.len(),
                demux.routes().collect::<Vec<_>>()
            );
        }
        // An address routes to a running session, and only one that sent a datagram.
        for (addr, id) in demux.routes() {
            assert!(demux.has_session(id), "{addr} routed to ended session {id}");
            assert!(peers.contains(addr), "{addr} never sent anything");
        }
    }
    // The media threads' side of the channels: whatever came through is one frame each.
    for rx in &media {
        while let Ok(m) = rx.try_recv() {
            assert!(!m.data.is_empty() || m.track == rungs::media::TrackKind::Audio);
        }
    }
});
