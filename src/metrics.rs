//! Every Prometheus metric the node exports, defined in one place.
//!
//! Names follow `rungs_<thing>_<unit>`, counters end in `_total`, units are
//! base units. Labels carry channel ids, never stream keys or tokens.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    registry: Registry,
    /// Bytes of media payload received, per channel and ingest protocol.
    pub ingest_bytes: IntCounterVec,
    /// Frames received, per channel and track (`video`, `audio`).
    pub ingest_frames: IntCounterVec,
    /// Seconds between the last two source keyframes.
    pub keyframe_interval: GaugeVec,
    /// Publish attempts refused, per reason.
    pub ingest_rejected: IntCounterVec,
    /// Packets dropped between ingest and packaging because the channel fell behind.
    pub ingest_dropped_packets: IntCounterVec,
    /// Channels with a publisher (or within their reconnect grace period).
    pub live_channels: IntGauge,
    /// Current publish sessions per ingest protocol.
    pub publishers: IntGaugeVec,
    pub parts_published: IntCounterVec,
    pub segments_published: IntCounterVec,
    /// Playlist or part requests currently held open by blocking reload.
    pub blocked_requests: IntGauge,
    /// From a frame's arrival at ingest to its part being fetchable.
    pub ingest_to_part: HistogramVec,
    /// Node start time as a Unix timestamp, for uptime panels.
    pub start_time: Gauge,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let m = Metrics {
            ingest_bytes: counter(
                "rungs_ingest_bytes_total",
                "Media payload bytes received from publishers.",
                &["channel", "ingest"],
            ),
            ingest_frames: counter(
                "rungs_ingest_frames_total",
                "Video and audio frames received from publishers.",
                &["channel", "track"],
            ),
            keyframe_interval: GaugeVec::new(
                Opts::new(
                    "rungs_ingest_keyframe_interval_seconds",
                    "Seconds between the last two source keyframes.",
                ),
                &["channel"],
            )
            .expect("static metric definition"),
            ingest_rejected: counter(
                "rungs_ingest_rejected_total",
                "Publish attempts refused, by reason.",
                &["ingest", "reason"],
            ),
            ingest_dropped_packets: counter(
                "rungs_ingest_dropped_packets_total",
                "Packets dropped because the channel's packager fell behind.",
                &["channel"],
            ),
            live_channels: IntGauge::new(
                "rungs_live_channels",
                "Channels that have a publisher or are within their reconnect grace period.",
            )
            .expect("static metric definition"),
            publishers: IntGaugeVec::new(
                Opts::new("rungs_publishers", "Connected publish sessions."),
                &["ingest"],
            )
            .expect("static metric definition"),
            parts_published: counter(
                "rungs_parts_published_total",
                "LL-HLS partial segments made available.",
                &["channel", "rendition"],
            ),
            segments_published: counter(
                "rungs_segments_published_total",
                "HLS media segments completed.",
                &["channel", "rendition"],
            ),
            blocked_requests: IntGauge::new(
                "rungs_hls_blocked_requests",
                "Playlist and part requests currently waiting on blocking reload.",
            )
            .expect("static metric definition"),
            ingest_to_part: HistogramVec::new(
                HistogramOpts::new(
                    "rungs_ingest_to_part_seconds",
                    "Seconds from a part's first frame arriving at ingest to the part being available.",
                )
                .buckets(vec![
                    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
                ]),
                &["channel", "rendition"],
            )
            .expect("static metric definition"),
            start_time: Gauge::new(
                "rungs_start_time_seconds",
                "Unix time at which the node started.",
            )
            .expect("static metric definition"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.ingest_bytes.clone()),
            Box::new(m.ingest_frames.clone()),
            Box::new(m.keyframe_interval.clone()),
            Box::new(m.ingest_rejected.clone()),
            Box::new(m.ingest_dropped_packets.clone()),
            Box::new(m.live_channels.clone()),
            Box::new(m.publishers.clone()),
            Box::new(m.parts_published.clone()),
            Box::new(m.segments_published.clone()),
            Box::new(m.blocked_requests.clone()),
            Box::new(m.ingest_to_part.clone()),
            Box::new(m.start_time.clone()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }
        m
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Drops every series of this channel, so a deleted channel stops being
    /// exported. `renditions` are the rendition names it was packaged as.
    pub fn forget_channel(&self, channel: &str, renditions: &[&str]) {
        let _ = self.keyframe_interval.remove_label_values(&[channel]);
        let _ = self.ingest_dropped_packets.remove_label_values(&[channel]);
        let _ = self.ingest_bytes.remove_label_values(&[channel, "rtmp"]);
        for track in ["video", "audio"] {
            let _ = self.ingest_frames.remove_label_values(&[channel, track]);
        }
        for r in renditions {
            let _ = self.parts_published.remove_label_values(&[channel, r]);
            let _ = self.segments_published.remove_label_values(&[channel, r]);
            let _ = self.ingest_to_part.remove_label_values(&[channel, r]);
        }
    }
}

/// The node's metrics. One process, one registry.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
