//! The channel core driven by a fake clock (no thread, no sleep), and a
//! publisher's drop-whole-GOPs gate against a small queue.

use super::channel::{CONTROL_QUEUE, LiveChannel, Stamped};
use super::core::{ChannelCore, Input, Joined, Output, Refusal, Timing};
use super::journal::SessionNote;
use super::status::{Health, StreamState};
use super::*;
use crate::media::{Packet, VideoEvent};
use crate::package::Update;
use crate::package::metadata::{MetadataRefusal, Payload, Placement};
use crate::package::testmedia::{audio_params, media, sized_video_params, video_params};
use crate::transcode::pipeline::Output as RungOutput;
use bytes::Bytes;
use std::time::{Instant, SystemTime};

const TIMING: Timing = Timing {
    grace: Duration::from_secs(2),
    linger: Duration::from_secs(5),
};

/// A fake clock: media time `ms` arrives at `t0 + ms`.
struct Rig {
    core: ChannelCore,
    t0: Instant,
    wall0: SystemTime,
    /// Session notes, set aside from the outputs a test looks at.
    notes: Vec<SessionNote>,
    /// The latest status snapshot.
    status: Option<StreamStatus>,
}

impl Rig {
    fn new(transcode: bool) -> Rig {
        let t0 = Instant::now();
        let first = Joined {
            session: 1,
            protocol: "rtmp",
            at: t0,
        };
        Rig {
            core: ChannelCore::new(
                "test",
                PackageConfig::default(),
                TIMING,
                transcode,
                TrackUse::default(),
                first,
            ),
            t0,
            wall0: SystemTime::now(),
            notes: Vec::new(),
            status: None,
        }
    }

    /// Publish session `session` asks for the channel at `ms`.
    fn admit(&mut self, session: u64, ms: i64) -> Result<(), Refusal> {
        let joined = Joined {
            session,
            protocol: "whip",
            at: self.at(ms),
        };
        let answer = self.core.admit(joined);
        self.drain();
        answer
    }

    /// The core's outputs, less the notes and snapshots kept in `self`.
    fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Session(n) => self.notes.push(n),
                Output::Status(s) => self.status = Some(*s),
                o => out.push(o),
            }
        }
        out
    }

    fn events(&self) -> Vec<(&'static str, String)> {
        self.notes
            .iter()
            .filter_map(|n| match n {
                SessionNote::Event { kind, detail } => Some((*kind, detail.clone())),
                _ => None,
            })
            .collect()
    }

    fn left(&mut self, session: u64, ms: i64, abandoned: bool) -> Vec<Output> {
        let reason = "disconnected".to_string();
        self.handle(
            ms,
            Input::Left {
                session,
                abandoned,
                reason,
            },
        )
    }

    fn at(&self, ms: i64) -> Instant {
        self.t0 + Duration::from_millis(ms as u64)
    }

    fn arrival(&self, ms: i64) -> Arrival {
        Arrival {
            wall: self.wall0 + Duration::from_millis(ms as u64),
            at: self.at(ms),
        }
    }

    fn handle(&mut self, ms: i64, input: Input) -> Vec<Output> {
        self.core.handle(self.at(ms), input);
        self.drain()
    }

    fn event(&mut self, session: u64, ms: i64, event: IngestEvent) -> Vec<Output> {
        let arrival = self.arrival(ms);
        self.handle(
            ms,
            Input::Media {
                session,
                event,
                arrival,
            },
        )
    }

    /// Configurations and `secs` of 30 fps video (a keyframe each second)
    /// with AAC, from media time `from_ms`, as session `session` sends them.
    fn publish(&mut self, session: u64, from_ms: i64, secs: i64) -> Vec<Output> {
        let mut out = self.event(
            session,
            from_ms,
            IngestEvent::VideoConfig(video_params(320)),
        );
        out.extend(self.event(session, from_ms, IngestEvent::AudioConfig(audio_params())));
        for p in media(from_ms, secs, 30, true) {
            let ms = p.dts / 90;
            out.extend(self.event(session, ms, IngestEvent::Packet(p)));
        }
        out
    }
}

fn updates(out: &[Output]) -> Vec<&Update> {
    out.iter()
        .filter_map(|o| match o {
            Output::Store(u) => Some(u),
            _ => None,
        })
        .flatten()
        .collect()
}

fn ended(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Ended))
}

fn removed(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Remove))
}

fn has_end(out: &[Output]) -> bool {
    updates(out).iter().any(|u| matches!(u, Update::End))
}

#[test]
fn reconnect_within_grace_continues_with_a_discontinuity() {
    let mut r = Rig::new(false);
    let first = r.publish(1, 0, 4);
    assert!(
        updates(&first)
            .iter()
            .any(|u| matches!(u, Update::Part { .. }))
    );
    let left = r.left(1, 4000, false);
    assert!(!ended(&left), "a lost publisher gets a grace period");
    assert_eq!(r.core.poll_timeout(), Some(r.at(4000) + TIMING.grace));
    // Within grace nothing ends, and another publisher may take over.
    assert!(!ended(&r.handle(5000, Input::Timeout)));
    assert_eq!(r.admit(2, 5000), Ok(()));
    assert_eq!(r.admit(3, 5000), Err(Refusal::AlreadyLive));
    assert_eq!(r.core.poll_timeout(), None, "grace cancelled");
    let again = r.publish(2, 5000, 3);
    assert!(
        updates(&again).iter().any(|u| matches!(
            u,
            Update::SegmentStart {
                discontinuity: true,
                ..
            }
        )),
        "the reconnected stream continues after EXT-X-DISCONTINUITY"
    );
    assert!(!ended(&again) && !has_end(&again));
}

#[test]
fn grace_expiry_ends_the_stream_then_linger_then_removal() {
    let mut r = Rig::new(false);
    r.publish(1, 0, 3);
    r.left(1, 3000, false);
    let out = r.handle(5000, Input::Timeout);
    assert!(
        ended(&out) && has_end(&out),
        "EXT-X-ENDLIST at grace expiry"
    );
    assert!(!removed(&out), "ended playlists are served a while");
    assert_eq!(
        r.admit(2, 5000),
        Err(Refusal::Ended),
        "a new publisher starts a new stream"
    );
    assert_eq!(r.core.poll_timeout(), Some(r.at(5000) + TIMING.linger));
    assert!(!removed(&r.handle(9000, Input::Timeout)));
    assert!(removed(&r.handle(10_000, Input::Timeout)));
    assert!(
        r.handle(11_000, Input::Timeout).is_empty(),
        "done means done"
    );
}

#[test]
fn a_publisher_that_leaves_before_video_is_abandoned_without_linger() {
    let mut r = Rig::new(false);
    r.event(1, 0, IngestEvent::AudioConfig(audio_params()));
    let out = r.left(1, 100, true);
    assert!(ended(&out) && removed(&out), "{out:?}");
}

#[test]
fn terminate_mid_gop_ends_at_once_and_swallows_later_media() {
    let mut r = Rig::new(false);
    r.publish(1, 0, 2);
    // Half a GOP more, then the channel is deleted.
    for p in media(2000, 1, 30, true).into_iter().take(20) {
        let ms = p.dts / 90;
        r.event(1, ms, IngestEvent::Packet(p));
    }
    let out = r.handle(2500, Input::Terminate);
    assert!(ended(&out) && has_end(&out));
    assert!(
        updates(&out)
            .iter()
            .any(|u| matches!(u, Update::SegmentEnd { .. })),
        "the half GOP is flushed as the last segment"
    );
    let later = r.publish(1, 2600, 1);
    assert!(
        later.is_empty(),
        "media after the end goes nowhere: {later:?}"
    );
    assert!(
        removed(&r.handle(2700, Input::Terminate)),
        "a second terminate ends the linger"
    );
}

#[test]
fn a_rung_output_after_the_stream_ended_is_ignored() {
    let mut r = Rig::new(false);
    r.publish(1, 0, 2);
    r.handle(2000, Input::Terminate);
    let late = RungOutput::Packet {
        rung: 0,
        packet: Packet {
            track: TrackKind::Video,
            dts: 0,
            pts: 0,
            keyframe: true,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        },
        arrival: r.arrival(2000),
    };
    assert!(r.handle(2100, Input::Rung(late)).is_empty());
}

#[test]
fn the_pipeline_is_flushed_before_the_core_moves_on() {
    let mut r = Rig::new(true);
    let out = r.publish(1, 0, 1);
    assert!(matches!(
        out.iter().find(|o| !matches!(o, Output::Store(_))),
        Some(Output::StartPipeline { .. })
    ));
    let fed = out
        .iter()
        .filter(|o| matches!(o, Output::Transcode(..)))
        .count();
    assert_eq!(fed, 31, "the video configuration and every video packet");
    let left = r.left(1, 1000, false);
    assert!(matches!(left.as_slice(), [Output::FlushPipeline]));
    assert_eq!(r.core.poll_timeout(), None, "grace waits for the flush");
    r.handle(1000, Input::Flushed(Vec::new()));
    assert_eq!(r.core.poll_timeout(), Some(r.at(1000) + TIMING.grace));
    // A reconnect starts a new pipeline.
    assert_eq!(r.admit(2, 1100), Ok(()));
    let again = r.publish(2, 1500, 1);
    assert!(
        again
            .iter()
            .any(|o| matches!(o, Output::StartPipeline { .. }))
    );
}

#[test]
fn an_hour_of_media_goes_through_on_the_fake_clock() {
    let mut r = Rig::new(false);
    let started = Instant::now();
    let mut parts = 0;
    let mut segments = 0;
    // Ten-minute batches keep the generated media small.
    for batch in 0..6 {
        let from = batch * 600_000;
        let out = if batch == 0 {
            r.publish(1, from, 600)
        } else {
            media(from, 600, 30, true)
                .into_iter()
                .flat_map(|p| {
                    let ms = p.dts / 90;
                    r.event(1, ms, IngestEvent::Packet(p))
                })
                .collect()
        };
        for u in updates(&out) {
            match u {
                Update::Part { .. } => parts += 1,
                Update::SegmentEnd { .. } => segments += 1,
                _ => {}
            }
        }
    }
    let out = r.handle(3_600_000, Input::Terminate);
    assert!(ended(&out));
    // Two renditions (source video, audio), 2 s segments, 200 ms parts.
    assert!((3590..=3602).contains(&segments), "{segments} segments");
    assert!(parts >= 10 * (segments - 2), "{parts} parts");
    eprintln!(
        "an hour of media through the core in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// A session journal nothing reads: its notes are dropped.
fn unread_journal() -> Journal {
    let (tx, _) = crossbeam_channel::bounded(1);
    Journal::open(tx, 1, "test", "rtmp")
}

/// A publisher whose channel has room for `room` events and no thread.
fn publisher(room: usize) -> (Publisher, crossbeam_channel::Receiver<Stamped>) {
    let (events, events_rx) = crossbeam_channel::bounded(room);
    let (control, _control_rx) = crossbeam_channel::bounded(CONTROL_QUEUE);
    let live = Arc::new(LiveChannel::new(
        "gate-test",
        ChannelStore::new("gate-test", &PackageConfig::default()),
        events,
        control,
        unread_journal(),
    ));
    (
        Publisher::new(live, 1, "rtmp", true, IngestLimits::NONE),
        events_rx,
    )
}

#[test]
fn a_full_queue_drops_whole_gops_and_counts_them() {
    let (p, queue) = publisher(40);
    let dropped = || {
        METRICS
            .ingest_dropped_packets
            .with_label_values(&["gate-test"])
            .get()
    };
    let before = dropped();
    let now = Arrival::now();
    p.send(IngestEvent::VideoConfig(video_params(320)), now)
        .expect("not cut");
    // Three GOPs of 30 frames into room for 40 events: the first GOP fits,
    // the second overflows and is dropped whole, the third is refused too
    // until the queue drains.
    let video: Vec<Packet> = media(0, 3, 30, false);
    for pkt in &video[..60] {
        p.send(IngestEvent::Packet(pkt.clone()), now)
            .expect("not cut");
    }
    let got: Vec<Stamped> = queue.try_iter().collect();
    assert_eq!(got.len(), 40);
    // With room again, nothing passes until the next keyframe, which comes
    // with the configuration again.
    for pkt in &video[60..] {
        p.send(IngestEvent::Packet(pkt.clone()), now)
            .expect("not cut");
    }
    let resumed: Vec<Stamped> = queue.try_iter().collect();
    assert!(matches!(resumed[0].event, IngestEvent::VideoConfig(_)));
    match &resumed[1].event {
        IngestEvent::Packet(k) => assert!(k.keyframe && k.dts == video[60].dts),
        other => panic!("expected the keyframe, got {other:?}"),
    }
    assert_eq!(resumed.len(), 31);
    // 21 of the second GOP found no room; the third GOP went through.
    assert_eq!(dropped() - before, 21);
}

/// `rungs_live_channels` is one gauge for the whole process: tests that
/// start channels on a hub take turns, so each sees only its own.
static LIVE_GAUGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gauge_turn() -> std::sync::MutexGuard<'static, ()> {
    LIVE_GAUGE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A hub with its own registry and channel threads, channels passing the
/// source through (no transcoding), and the tempdir that holds its database.
fn hub() -> (Arc<Hub>, tempfile::TempDir) {
    use crate::transcode::pipeline::{EncoderTuning, Pace};
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Arc::new(Registry::open(dir.path()).expect("registry"));
    let cfg = HubConfig {
        package: PackageConfig::default(),
        limits: IngestLimits::NONE,
        reconnect_grace: Duration::from_secs(5),
        ended_linger: Duration::from_secs(30),
        queue_packets: 4096,
        transcode: PipelineConfig {
            ladder: crate::transcode::ladder::PASSTHROUGH.into(),
            ladders: Arc::new(Ladders::default()),
            pace: Pace::Live,
            encoder: EncoderTuning {
                preset: "veryfast".into(),
                low_latency: true,
                threads: 1,
            },
            decoder_threads: 1,
            scaler: Default::default(),
            queue_frames: 8,
            quality_every_gops: 0,
            frame_rate: None,
            gpu: None,
            covered: Vec::new(),
        },
    };
    (Hub::new(registry, cfg, None, None), dir)
}

/// A channel in `hub`'s registry: (id, stream key).
fn channel(hub: &Hub, name: &str) -> (String, String) {
    let c = hub
        .registry()
        .create(name, crate::transcode::ladder::PASSTHROUGH)
        .expect("create");
    (c.id, c.stream_key)
}

/// Sends `secs` seconds of media from `from_ms`, stopping at a cut.
fn stream(p: &Publisher, from_ms: i64, secs: i64) -> Result<(), Cut> {
    let now = Arrival::now();
    p.send(IngestEvent::VideoConfig(video_params(320)), now)?;
    p.send(IngestEvent::AudioConfig(audio_params()), now)?;
    media(from_ms, secs, 30, true)
        .into_iter()
        .try_for_each(|pkt| p.send(IngestEvent::Packet(pkt), now))
}

/// Waits up to 10 s for `cond`.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn playlist(store: &ChannelStore) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(store.media_playlist("source", crate::package::PlaylistRequest::default()))
        .expect("playlist")
}

#[test]
fn a_panic_in_one_channel_ends_its_stream_alone_and_a_republish_starts_afresh() {
    let _turn = gauge_turn();
    let (hub, _dir) = hub();
    let (a, key_a) = channel(&hub, "a");
    let (b, key_b) = channel(&hub, "b");
    let live_before = METRICS.live_channels.get();
    let pa = hub.start_publish(&key_a, "rtmp").expect("publish a");
    let pb = hub.start_publish(&key_b, "rtmp").expect("publish b");
    stream(&pa, 0, 3).expect("a streams");
    stream(&pb, 0, 3).expect("b streams");
    let store_a = hub.store(&a).expect("a live");
    let store_b = hub.store(&b).expect("b live");
    eventually("a has media", || store_a.has_media());

    super::channel::faults::arm(&a);
    // The next packaged batch of channel a panics; the rest of this media
    // goes nowhere once its thread is gone.
    let after = stream(&pa, 3000, 3).and_then(|()| {
        eventually("a's thread ended", || hub.store(&a).is_none());
        stream(&pa, 6000, 1)
    });
    assert_eq!(after, Err(Cut::ChannelFailed));
    eventually("a's thread ended", || hub.store(&a).is_none());
    assert!(playlist(&store_a).contains("#EXT-X-ENDLIST"));
    // Channel b is still live, and counted.
    assert_eq!(METRICS.live_channels.get(), live_before + 1);
    stream(&pb, 3000, 2).expect("b goes on");
    assert!(!playlist(&store_b).contains("#EXT-X-ENDLIST"));

    drop(pa);
    let again = hub.start_publish(&key_a, "rtmp").expect("republish a");
    stream(&again, 0, 2).expect("the new stream takes media");
    let store_again = hub.store(&a).expect("a live again");
    assert!(!Arc::ptr_eq(&store_a, &store_again), "a new stream");
    eventually("a's new stream has media", || store_again.has_media());
    assert_eq!(METRICS.live_channels.get(), live_before + 2);
    for id in [&a, &b] {
        hub.terminate(id);
    }
    eventually("both ended", || METRICS.live_channels.get() == live_before);
}

#[test]
fn a_rotated_key_or_a_deleted_channel_cuts_the_publisher_and_the_new_key_publishes() {
    let _turn = gauge_turn();
    let live_before = METRICS.live_channels.get();
    let (hub, _dir) = hub();
    let (a, key_a) = channel(&hub, "a");
    let (b, key_b) = channel(&hub, "b");
    let (c, key_c) = channel(&hub, "c");
    let pa = hub.start_publish(&key_a, "rtmp").expect("publish a");
    let pb = hub.start_publish(&key_b, "rtmp").expect("publish b");
    let pc = hub.start_publish(&key_c, "whip").expect("publish c");
    for p in [&pa, &pb, &pc] {
        stream(p, 0, 1).expect("streams");
    }

    // Through the node (the API): rotate and revoke at once.
    let rotated = hub.registry().rotate_key(&a).expect("rotate");
    hub.revoke(&a);
    assert_eq!(stream(&pa, 1000, 1), Err(Cut::KeyRotated));
    // Behind the node's back (the CLI): the next registry sync finds out.
    hub.registry().rotate_key(&b).expect("rotate");
    hub.registry().delete(&c).expect("delete");
    stream(&pb, 1000, 1).expect("not known yet");
    hub.sync_registry().expect("sync");
    assert_eq!(stream(&pb, 2000, 1), Err(Cut::KeyRotated));
    assert_eq!(stream(&pc, 1000, 1), Err(Cut::Deleted));

    // The old key is refused; the new one takes the stream back in grace.
    drop(pa);
    assert!(matches!(
        hub.start_publish(&key_a, "rtmp"),
        Err(PublishError::UnknownKey)
    ));
    let again = hub
        .start_publish(&rotated.stream_key, "rtmp")
        .expect("new key");
    stream(&again, 1000, 1).expect("the new publisher is not cut");
    for id in [&a, &b] {
        hub.terminate(id);
    }
    eventually("every stream ended", || {
        METRICS.live_channels.get() == live_before
    });
}

#[test]
fn a_publisher_over_its_bitrate_cap_is_cut_and_counted() {
    let (live, _queue) = {
        let (events, events_rx) = crossbeam_channel::bounded(4096);
        let (control, _control_rx) = crossbeam_channel::bounded(CONTROL_QUEUE);
        let live = Arc::new(LiveChannel::new(
            "cap-test",
            ChannelStore::new("cap-test", &PackageConfig::default()),
            events,
            control,
            unread_journal(),
        ));
        (live, (events_rx, _control_rx))
    };
    let limits = IngestLimits {
        max_bitrate_bps: Some(500),
        ..IngestLimits::NONE
    };
    let cut = || {
        METRICS
            .ingest_cut
            .with_label_values(&["rtmp", "bitrate"])
            .get()
    };
    let before = cut();
    let p = Publisher::new(live, 1, "rtmp", true, limits);
    // testmedia's video frames are 5 bytes and its audio 3: some 2 kb/s.
    let sent = stream(&p, 0, 10);
    assert!(
        matches!(sent, Err(Cut::Limit(OverLimit::Bitrate { .. }))),
        "{sent:?}"
    );
    assert_eq!(
        stream(&p, 10_000, 1).map_err(|e| e.reason()),
        Err("bitrate")
    );
    assert_eq!(cut() - before, 1, "counted once");
}

/// The core's answer to [`Input::Metadata`].
fn placed(out: &[Output]) -> Option<&Result<Placement, MetadataRefusal>> {
    out.iter().find_map(|o| match o {
        Output::Metadata(a) => Some(a),
        _ => None,
    })
}

#[test]
fn metadata_is_placed_while_live_and_refused_in_grace() {
    let text = || Input::Metadata {
        payload: Payload::Text("hi".into()),
        duration: None,
    };
    let mut r = Rig::new(false);
    assert_eq!(
        placed(&r.handle(0, text())),
        Some(&Err(MetadataRefusal::NotLive)),
        "no media yet"
    );
    r.publish(1, 0, 3);
    let out = r.handle(3000, text());
    assert!(matches!(placed(&out), Some(Ok(_))), "{out:?}");
    // The next part carries it, with its date range.
    let next = r.publish(1, 3000, 1);
    assert!(
        updates(&next)
            .iter()
            .any(|u| matches!(u, Update::DateRange { .. })),
        "a date range goes with the next part"
    );
    r.left(1, 4000, false);
    assert_eq!(
        placed(&r.handle(4100, text())),
        Some(&Err(MetadataRefusal::NotLive)),
        "in the grace period no part is coming"
    );
}

#[test]
fn the_session_record_tells_a_reconnect_a_refusal_a_format_change_and_the_end() {
    let mut r = Rig::new(false);
    r.publish(1, 0, 4);
    // The configuration goes to the record at once, the measured rates
    // once there are some.
    let ingests: Vec<&status::IngestInfo> = r
        .notes
        .iter()
        .filter_map(|n| match n {
            SessionNote::Ingest(i) => Some(i),
            _ => None,
        })
        .collect();
    // Video, audio, then the rates.
    assert_eq!(ingests.len(), 3, "{:?}", r.notes);
    let video = |i: &status::IngestInfo| i.video.clone().expect("video");
    assert_eq!(
        (video(ingests[0]).width, ingests[0].protocol),
        (320, "rtmp")
    );
    assert_eq!(video(ingests[1]).frame_rate, None);
    assert_eq!(ingests[1].audio.clone().map(|a| a.channels), Some(2));
    let fps = video(ingests[2]).frame_rate.unwrap_or(0.0);
    assert!((fps - 30.0).abs() < 0.5, "{fps}");
    assert!(ingests[2].bitrate_bps.is_some());

    r.left(1, 4000, false);
    assert_eq!(r.admit(2, 5000), Ok(()));
    assert_eq!(r.admit(3, 5100), Err(Refusal::AlreadyLive));
    r.publish(2, 5000, 2);
    // The same format again is no change; a new size is.
    r.event(2, 7000, IngestEvent::VideoConfig(video_params(640)));
    r.left(2, 7000, false);
    r.handle(9000, Input::Timeout);

    let events = r.events();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            "publisher left",
            "publisher reconnected",
            "publish refused",
            "ingest changed",
            "publisher left"
        ],
        "{events:?}"
    );
    assert_eq!(events[0].1, "disconnected");
    assert_eq!(events[1].1, "whip");
    assert_eq!(
        events[3].1,
        "video h264 320x240 High 1.3 -> h264 640x240 High 1.3"
    );
    assert_eq!(
        r.notes.last(),
        Some(&SessionNote::Ended {
            reason: "publisher did not come back (disconnected)".into()
        })
    );
}

#[test]
fn status_follows_the_stream_from_live_to_reconnecting_to_offline() {
    use crate::transcode::backend::{ChannelPlan, SoftwareDecode, X264Reason};
    use crate::transcode::frame::Size;
    use crate::transcode::ladder::Rung;

    let mut r = Rig::new(true);
    r.publish(1, 0, 6);
    let s = r.status.clone().expect("a snapshot");
    assert_eq!(s.state, StreamState::Live);
    assert_eq!(s.rungs, vec![status::RungInfo::source()]);
    assert_eq!(s.ingest.protocol, "rtmp");
    let video = s.ingest.video.clone().expect("video");
    assert_eq!((video.width, video.height), (320, 240));
    assert_eq!(s.ingest.audio.clone().map(|a| a.sample_rate), Some(44_100));
    assert_eq!(s.health(r.at(6000)), Health::Healthy);
    assert_eq!(s.health(r.at(9000)), Health::Starving, "silent for 3 s");

    let rung = Rung {
        name: "180p".into(),
        size: Size {
            width: 240,
            height: 180,
        },
        bitrate_bps: 300_000,
    };
    r.handle(6000, Input::Rung(RungOutput::Plan(vec![rung])));
    let plan = ChannelPlan::cpu(1, SoftwareDecode::GpuOff, X264Reason::GpuOff);
    r.handle(6000, Input::Rung(RungOutput::Backends(plan)));
    let rungs = r.status.clone().expect("a snapshot").rungs;
    assert_eq!(rungs.len(), 2);
    assert_eq!(
        (rungs[1].name.as_str(), rungs[1].encoder, rungs[1].backend),
        ("180p", Some("libx264"), Some("cpu"))
    );

    r.left(1, 6000, false);
    r.handle(6000, Input::Flushed(Vec::new()));
    let s = r.status.clone().expect("a snapshot");
    assert_eq!(s.state, StreamState::Reconnecting);
    assert_eq!(s.health(r.at(6100)), Health::Unknown, "nobody to judge");
    r.handle(8000, Input::Timeout);
    assert_eq!(r.status.map(|s| s.state), Some(StreamState::Offline));
}

#[test]
fn a_stream_reports_status_and_viewers_and_its_session_reaches_the_registry() {
    let _turn = gauge_turn();
    let (hub, _dir) = hub();
    let (id, key) = channel(&hub, "status");
    let p = hub.start_publish(&key, "rtmp").expect("publish");
    stream(&p, 0, 2).expect("streams");
    eventually("a snapshot with the ingest", || {
        hub.stream_status(&id, Instant::now())
            .is_some_and(|(s, _)| s.ingest.video.is_some())
    });
    let now = Instant::now();
    for a in [[192, 0, 2, 1], [192, 0, 2, 1], [192, 0, 2, 2]] {
        hub.note_playlist_request(&id, a.into(), now);
    }
    let (s, viewers) = hub.stream_status(&id, now).expect("live");
    assert_eq!(
        (s.state, viewers, s.ingest.protocol),
        (StreamState::Live, 2, "rtmp")
    );
    assert!(hub.stream_status("nope", now).is_none());

    drop(p);
    hub.terminate(&id);
    let ended = || {
        let list = hub.registry().sessions(&id, 1).expect("sessions");
        list.into_iter().find(|s| s.end_reason.is_some())
    };
    eventually("the session ends in the registry", || ended().is_some());
    let s = ended().expect("ended");
    assert_eq!(s.end_reason.as_deref(), Some("channel deleted"));
    assert_eq!(s.protocol, "rtmp");
    assert_eq!(s.ingest.expect("ingest")["video"]["width"], 320);
    assert!(
        s.events
            .iter()
            .any(|e| e.kind == "publisher left" && e.detail == "disconnected"),
        "{:?}",
        s.events
    );
}

mod publishers;
