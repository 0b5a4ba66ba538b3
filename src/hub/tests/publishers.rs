//! The hub and its publishers beyond one plain stream: reconnect requests reach only a
//! publisher that listens, and a multitrack publish's further tracks become rungs.

use super::*;

#[test]
fn a_reconnect_request_reaches_only_a_live_publisher_that_listens() {
    let _turn = gauge_turn();
    let live_before = METRICS.live_channels.get();
    let (hub, _dir) = hub();
    let (a, key_a) = channel(&hub, "a");
    let (b, key_b) = channel(&hub, "b");
    let (idle, _) = channel(&hub, "idle");
    let ask = |id: &str, tc_url: Option<&str>| {
        hub.request_reconnect(
            id,
            ReconnectRequest {
                tc_url: tc_url.map(str::to_owned),
            },
        )
    };
    let sent_before = METRICS
        .reconnect_requests
        .with_label_values(&["sent"])
        .get();

    // a listens (an RTMP publisher that announced capsEx Reconnect); b over WHIP cannot.
    let pa = hub.start_publish(&key_a, "rtmp").expect("publish a");
    let mut requests = pa.reconnect_requests();
    let pb = hub.start_publish(&key_b, "whip").expect("publish b");
    assert_eq!(
        ask(&a, Some("rtmp://edge-2/live")).expect("a"),
        ReconnectOutcome::Sent
    );
    assert!(requests.has_changed().expect("the hub holds the sender"));
    assert_eq!(
        requests.borrow_and_update().clone(),
        Some(ReconnectRequest {
            tc_url: Some("rtmp://edge-2/live".into())
        })
    );
    assert_eq!(
        ask(&b, None).expect("b"),
        ReconnectOutcome::NotSupported { ingest: "whip" }
    );
    assert_eq!(ask(&idle, None).expect("idle"), ReconnectOutcome::NotLive);
    assert!(matches!(
        ask("no-such-channel", None),
        Err(ReconnectError::UnknownChannel(_))
    ));
    assert_eq!(
        METRICS
            .reconnect_requests
            .with_label_values(&["sent"])
            .get(),
        sent_before + 1
    );

    // Gone (its channel waits in its grace period): not live, and nothing reaches the old
    // connection's receiver.
    drop(pa);
    assert_eq!(ask(&a, None).expect("a"), ReconnectOutcome::NotLive);
    assert!(requests.has_changed().is_err(), "the sender went with it");
    // A publisher cut by a key rotation is on its way out.
    hub.registry().rotate_key(&b).expect("rotate");
    hub.revoke(&b);
    assert_eq!(ask(&b, None).expect("b"), ReconnectOutcome::NotLive);
    drop(pb);
    for id in [&a, &b] {
        hub.terminate(id);
    }
    eventually("both ended", || METRICS.live_channels.get() == live_before);
}

/// A further track of 160x120, its frames on the source's clock; keyframes where the
/// source's are unless `shift` moves them.
fn track_events(from_ms: i64, secs: i64, shift: i64) -> Vec<IngestEvent> {
    media(from_ms, secs, 30, false)
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            p.keyframe = (i as i64 + shift) % 30 == 0;
            IngestEvent::Track {
                id: 1,
                event: VideoEvent::Packet(p),
            }
        })
        .collect()
}

fn track_config() -> IngestEvent {
    IngestEvent::Track {
        id: 1,
        event: VideoEvent::Config(sized_video_params(160, 120)),
    }
}

impl Rig {
    /// [`Rig::publish`] with a further track, its frames each after the source's.
    fn publish_multitrack(
        &mut self,
        session: u64,
        from_ms: i64,
        secs: i64,
        shift: i64,
    ) -> Vec<Output> {
        let video = IngestEvent::VideoConfig(video_params(320));
        let mut out = self.event(session, from_ms, video);
        out.extend(self.event(session, from_ms, track_config()));
        out.extend(self.publish_multitrack_frames(session, from_ms, secs, shift));
        out
    }

    /// The frames alone (no configurations) of [`Rig::publish_multitrack`].
    fn publish_multitrack_frames(
        &mut self,
        session: u64,
        from_ms: i64,
        secs: i64,
        shift: i64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let mut track = track_events(from_ms, secs, shift).into_iter();
        for p in media(from_ms, secs, 30, false) {
            let ms = p.dts / 90;
            out.extend(self.event(session, ms, IngestEvent::Packet(p)));
            if let Some(t) = track.next() {
                out.extend(self.event(session, ms, t));
            }
        }
        out
    }
}

fn declared(out: &[Output], name: &str) -> bool {
    updates(out)
        .iter()
        .any(|u| matches!(u, Update::Declare { rendition, .. } if &**rendition == name))
}

fn retired(out: &[Output], name: &str) -> bool {
    updates(out)
        .iter()
        .any(|u| matches!(u, Update::Retire { rendition } if &**rendition == name))
}

fn parts_of(out: &[Output], name: &str) -> usize {
    updates(out)
        .iter()
        .filter(|u| matches!(u, Update::Part { rendition, .. } if &**rendition == name))
        .count()
}

#[test]
fn a_further_track_is_a_rung_the_pipeline_leaves_out_until_it_misses_a_keyframe() {
    let mut r = Rig::new(true);
    let out = r.publish_multitrack(1, 0, 3, 0);
    let start = out.iter().find_map(|o| match o {
        Output::StartPipeline { covered } => Some(covered.clone()),
        _ => None,
    });
    assert_eq!(
        start,
        Some(vec![120]),
        "the pipeline starts after the track is known"
    );
    assert!(declared(&out, "120p"));
    assert!(
        parts_of(&out, "120p") > 5,
        "the track's frames are packaged"
    );
    let status = r.status.clone().expect("status");
    let track = &status.ingest.tracks[0];
    assert_eq!(track.rendition.as_deref(), Some("120p"));
    assert!(
        status
            .rungs
            .iter()
            .any(|x| x.name == "120p" && x.encoder == Some("passthrough"))
    );

    // From second 3 the track's keyframes come 10 frames late: it leaves the ladder.
    let late = r.publish_multitrack_frames(1, 3000, 2, 10);
    assert!(retired(&late, "120p"));
    let status = r.status.clone().expect("status");
    let track = &status.ingest.tracks[0];
    assert!(track.rendition.is_none());
    assert!(
        track
            .reason
            .as_deref()
            .is_some_and(|w| w.contains("not a keyframe"))
    );
    assert!(r.events().iter().any(|(k, _)| *k == "track dropped"));
}

#[test]
fn a_reconnect_keeps_the_tracks_it_sends_again_and_drops_the_others() {
    let mut r = Rig::new(false);
    let out = r.publish_multitrack(1, 0, 2, 0);
    assert!(declared(&out, "120p"));
    r.left(1, 2000, false);
    assert_eq!(r.admit(2, 2100), Ok(()));
    let again = r.publish_multitrack(2, 2100, 2, 0);
    assert!(
        !retired(&again, "120p"),
        "the same track keeps its playlist"
    );
    assert!(parts_of(&again, "120p") > 5);
    r.left(2, 4100, false);
    assert_eq!(r.admit(3, 4200), Ok(()));
    let single = r.publish(3, 4200, 2);
    assert!(
        retired(&single, "120p"),
        "a session without the track drops its rung"
    );
}
