//! Every Prometheus metric the node exports, defined in one place.
//!
//! Names follow `rungs_<thing>_<unit>`, counters end in `_total`, units are
//! base units. Labels carry channel ids, never stream keys or tokens.

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Publishers cut off mid-stream, per reason.
    pub ingest_cut: IntCounterVec,
    /// Node-wide tasks started again after a panic.
    pub task_restarts: IntCounterVec,
    /// Operator requests that a publisher reconnect, per result.
    pub reconnect_requests: IntCounterVec,
    /// Authorization hook answers, per hook and result.
    pub hook_calls: IntCounterVec,
    /// Time the operator's backend took to answer a hook call.
    pub hook_seconds: HistogramVec,
    /// Packets dropped between ingest and packaging because the channel fell behind.
    pub ingest_dropped_packets: IntCounterVec,
    /// A multitrack publish's tracks taken out of the ladder, per reason.
    pub tracks_dropped: IntCounterVec,
    /// Channels with a publisher (or within their reconnect grace period).
    pub live_channels: IntGauge,
    /// Current publish sessions per ingest protocol.
    pub publishers: IntGaugeVec,
    pub parts_published: IntCounterVec,
    pub segments_published: IntCounterVec,
    /// Silent AAC frames the node put where the publisher's audio had a hole.
    pub audio_silence_frames: IntCounterVec,
    /// Playlist or part requests currently held open by blocking reload.
    pub blocked_requests: IntGauge,
    /// HTTP connections open, per listener (`player`, `admin`).
    pub http_connections: IntGaugeVec,
    /// HTTP connections refused at accept, per listener and reason.
    pub http_refused_connections: IntCounterVec,
    /// HTTP connections closed by a timeout, per listener and reason
    /// (`header_timeout`, `idle_timeout`).
    pub http_timed_out_connections: IntCounterVec,
    /// HTTP requests answered 503 at once, per reason (`too_many_blocked`).
    pub http_refused_requests: IntCounterVec,
    /// Player requests answered 403, per `X-Rungs-Refusal` reason.
    pub play_refused: IntCounterVec,
    /// From a frame's arrival at ingest to its part being fetchable.
    pub ingest_to_part: HistogramVec,
    /// Node start time as a Unix timestamp, for uptime panels.
    pub start_time: Gauge,
    /// PSNR (dB) of each rung's encoded output against its scaled input, sampled.
    pub rung_psnr: GaugeVec,
    /// SSIM of each rung's encoded output against its scaled input, sampled.
    pub rung_ssim: GaugeVec,
    /// Frames encoded per rung.
    pub rung_frames: IntCounterVec,
    /// Encoder wall time per rung, for encode fps and the real-time ratio.
    pub rung_encode_seconds: CounterVec,
    /// Wall seconds per second of media for the last GOP per rung (< 1 keeps up).
    pub rung_realtime_ratio: GaugeVec,
    /// Frames waiting for each rung's encoder.
    pub rung_queue_frames: IntGaugeVec,
    /// Whole GOPs a rung dropped because its encoder fell behind.
    pub rung_dropped_gops: IntCounterVec,
    /// From a source frame's arrival at ingest to its encoded rung frame.
    pub transcode_latency: HistogramVec,
    /// PLIs sent to WHIP publishers, per channel.
    pub whip_keyframe_requests: IntCounterVec,
    /// From a WHIP offer's answer to ICE and DTLS connected.
    pub whip_connect_seconds: prometheus::Histogram,
    /// WHIP sessions ended, per reason (`deleted`, `session_timeout`, ...).
    pub whip_sessions_ended: IntCounterVec,
    /// Datagrams on the WHIP UDP port that no session took, per reason.
    pub whip_datagrams_dropped: IntCounterVec,
    /// Live rungs per encode backend (`x264`, `nvenc`).
    pub rungs_by_backend: IntGaugeVec,
    /// Streams decoded in software although a GPU was chosen for them, per reason.
    pub decode_backend_fallbacks: IntCounterVec,
    /// Rungs encoded with libx264 although a GPU was chosen for them, per reason.
    pub encode_backend_fallbacks: IntCounterVec,
    /// Device memory in use per GPU (everything on it, not only this node's).
    pub gpu_memory_used: IntGaugeVec,
    /// GPU time spent in the node's kernels, per device and kernel.
    pub gpu_kernel_seconds: CounterVec,
    /// Open NVDEC and NVENC sessions per GPU.
    pub gpu_sessions: IntGaugeVec,
    /// Recording bytes written to object storage.
    pub recording_uploaded_bytes: prometheus::IntCounter,
    /// Recorded media segments written to object storage.
    pub recording_uploaded_segments: prometheus::IntCounter,
    /// Time one object took to reach object storage.
    pub recording_upload_seconds: prometheus::Histogram,
    /// Failed uploads (each is retried).
    pub recording_upload_errors: prometheus::IntCounter,
    /// Recorded segments not spooled because the spool was full.
    pub recording_dropped_segments: prometheus::IntCounter,
    /// Files and bytes waiting in the spool.
    pub recording_spool_files: IntGauge,
    pub recording_spool_bytes: IntGauge,
    /// Streams being recorded.
    pub recordings_active: IntGauge,
    /// Heartbeats that did not reach the registry.
    pub fleet_heartbeat_failures: prometheus::IntCounter,
    /// Player requests for a channel live on another node, per answer
    /// (`redirect`, `proxy`, `proxy_error`).
    pub fleet_forwarded: IntCounterVec,
    /// 1 while the node drains (takes no publishers), else 0.
    pub draining: IntGauge,
    // ---- Registry cost accounting (src/registry/): one count per Registry
    // call, `op` being the method's name (`get`, `heartbeat`, `claim_live`).
    /// Registry calls, per method.
    pub registry_queries: IntCounterVec,
    /// Registry calls the database failed, per method.
    pub registry_errors: IntCounterVec,
    // ---- end of registry cost accounting.
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
            task_restarts: counter(
                "rungs_task_restarts_total",
                "Node-wide tasks (listeners, WHIP UDP, registry sync, recording upload) started again after a panic.",
                &["task"],
            ),
            reconnect_requests: counter(
                "rungs_reconnect_requests_total",
                "Operator requests that a channel's publisher reconnect (Enhanced RTMP ReconnectRequest), by result (sent, not_supported, not_live, unknown_channel, error).",
                &["result"],
            ),
            hook_calls: counter(
                "rungs_hook_calls_total",
                "Authorization hook answers, by hook (publish, play) and result (allow, deny, cached, timeout, error).",
                &["hook", "result"],
            ),
            hook_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "rungs_hook_seconds",
                    "Time the operator's backend took to answer an authorization hook call.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["hook"],
            )
            .expect("static metric definition"),
            ingest_cut: counter(
                "rungs_ingest_cut_total",
                "Publishers cut off mid-stream: key rotated, channel deleted or failed, an ingest limit broken.",
                &["ingest", "reason"],
            ),
            ingest_dropped_packets: counter(
                "rungs_ingest_dropped_packets_total",
                "Packets dropped because the channel's packager fell behind.",
                &["channel"],
            ),
            tracks_dropped: counter(
                "rungs_ingest_tracks_dropped_total",
                "Video tracks of multitrack publishes taken out of the ladder (misaligned: a frame where the source has a keyframe is not one).",
                &["channel", "reason"],
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
            audio_silence_frames: counter(
                "rungs_audio_silence_frames_total",
                "Silent AAC frames inserted where the publisher's audio had a hole (lost or late packets); each is 1024 samples.",
                &["channel"],
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
            http_connections: IntGaugeVec::new(
                Opts::new(
                    "rungs_http_connections",
                    "HTTP connections open, per listener (player, admin).",
                ),
                &["listener"],
            )
            .expect("static metric definition"),
            http_refused_connections: counter(
                "rungs_http_refused_connections_total",
                "HTTP connections refused at accept (answered 503 or closed), by listener and reason.",
                &["listener", "reason"],
            ),
            http_timed_out_connections: counter(
                "rungs_http_timed_out_connections_total",
                "HTTP connections closed by the node for a header or idle timeout, by listener and reason.",
                &["listener", "reason"],
            ),
            http_refused_requests: counter(
                "rungs_http_refused_requests_total",
                "HTTP requests answered 503 at once, by reason (too_many_blocked: the cap on parked blocking requests).",
                &["reason"],
            ),
            play_refused: counter(
                "rungs_play_refused_total",
                "Player requests (playlists, init segments, parts, segments) answered 403, by reason (the X-Rungs-Refusal value, spaces as underscores).",
                &["reason"],
            ),
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
            rung_psnr: GaugeVec::new(
                Opts::new(
                    "rungs_rung_psnr_db",
                    "PSNR of a rung's encoded output against its scaled input (sampled frames).",
                ),
                &["channel", "rung"],
            )
            .expect("static metric definition"),
            rung_ssim: GaugeVec::new(
                Opts::new(
                    "rungs_rung_ssim",
                    "SSIM of a rung's encoded output against its scaled input (sampled frames).",
                ),
                &["channel", "rung"],
            )
            .expect("static metric definition"),
            rung_frames: counter(
                "rungs_rung_frames_encoded_total",
                "Frames encoded per rung.",
                &["channel", "rung", "backend"],
            ),
            rung_encode_seconds: CounterVec::new(
                Opts::new(
                    "rungs_rung_encode_seconds_total",
                    "Wall seconds spent encoding per rung; frames / this = encode fps.",
                ),
                &["channel", "rung", "backend"],
            )
            .expect("static metric definition"),
            rung_realtime_ratio: GaugeVec::new(
                Opts::new(
                    "rungs_rung_realtime_ratio",
                    "Encode wall time over media time for a rung's last GOP; above 1 falls behind.",
                ),
                &["channel", "rung"],
            )
            .expect("static metric definition"),
            rung_queue_frames: IntGaugeVec::new(
                Opts::new(
                    "rungs_rung_queue_frames",
                    "Scaled frames waiting for a rung's encoder.",
                ),
                &["channel", "rung"],
            )
            .expect("static metric definition"),
            rung_dropped_gops: counter(
                "rungs_rung_dropped_gops_total",
                "Whole GOPs a rung dropped because its encoder, or the channel thread reading it, fell behind.",
                &["channel", "rung"],
            ),
            transcode_latency: HistogramVec::new(
                HistogramOpts::new(
                    "rungs_transcode_latency_seconds",
                    "From a source frame's arrival at ingest to its encoded frame in a rung.",
                )
                .buckets(vec![
                    0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                ]),
                &["channel", "rung"],
            )
            .expect("static metric definition"),
            whip_keyframe_requests: counter(
                "rungs_whip_keyframe_requests_total",
                "Keyframe requests (RTCP PLI) sent to WHIP publishers.",
                &["channel"],
            ),
            whip_connect_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "rungs_whip_connect_seconds",
                    "From a WHIP session's SDP answer to ICE and DTLS connected.",
                )
                .buckets(vec![0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0]),
            )
            .expect("static metric definition"),
            whip_sessions_ended: counter(
                "rungs_whip_sessions_ended_total",
                "WHIP sessions ended, by reason.",
                &["reason"],
            ),
            whip_datagrams_dropped: counter(
                "rungs_whip_datagrams_dropped_total",
                "Datagrams on the WHIP UDP port that no session took.",
                &["reason"],
            ),
            rungs_by_backend: IntGaugeVec::new(
                Opts::new(
                    "rungs_rungs_by_backend",
                    "Live transcoded rungs per encode backend (x264, nvenc).",
                ),
                &["backend"],
            )
            .expect("static metric definition"),
            decode_backend_fallbacks: counter(
                "rungs_decode_backend_fallbacks_total",
                "Streams decoded in software although a GPU was chosen for them, by reason.",
                &["reason"],
            ),
            encode_backend_fallbacks: counter(
                "rungs_encode_backend_fallbacks_total",
                "Rungs encoded with libx264 although a GPU was chosen for them, by reason.",
                &["reason"],
            ),
            gpu_memory_used: IntGaugeVec::new(
                Opts::new(
                    "rungs_gpu_memory_used_bytes",
                    "Device memory in use on a GPU (by every process).",
                ),
                &["device"],
            )
            .expect("static metric definition"),
            gpu_kernel_seconds: CounterVec::new(
                Opts::new(
                    "rungs_gpu_kernel_seconds_total",
                    "GPU time spent in the node's CUDA kernels.",
                ),
                &["device", "kernel"],
            )
            .expect("static metric definition"),
            gpu_sessions: IntGaugeVec::new(
                Opts::new(
                    "rungs_gpu_sessions",
                    "Open hardware decode (nvdec) and encode (nvenc) sessions on a GPU.",
                ),
                &["device", "kind"],
            )
            .expect("static metric definition"),
            registry,
            recording_uploaded_bytes: prometheus::IntCounter::new(
                "rungs_recording_uploaded_bytes_total",
                "Recording bytes written to object storage.",
            )
            .expect("static metric definition"),
            recording_uploaded_segments: prometheus::IntCounter::new(
                "rungs_recording_uploaded_segments_total",
                "Recorded media segments written to object storage.",
            )
            .expect("static metric definition"),
            recording_upload_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "rungs_recording_upload_seconds",
                    "Time one recording object took to reach object storage.",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )
            .expect("static metric definition"),
            recording_upload_errors: prometheus::IntCounter::new(
                "rungs_recording_upload_errors_total",
                "Recording uploads that failed (each is retried).",
            )
            .expect("static metric definition"),
            recording_dropped_segments: prometheus::IntCounter::new(
                "rungs_recording_dropped_segments_total",
                "Recorded segments left out (listed as gaps) because the spool was full.",
            )
            .expect("static metric definition"),
            recording_spool_files: IntGauge::new(
                "rungs_recording_spool_files",
                "Recording files waiting in the spool for upload.",
            )
            .expect("static metric definition"),
            recording_spool_bytes: IntGauge::new(
                "rungs_recording_spool_bytes",
                "Bytes of recording files waiting in the spool for upload.",
            )
            .expect("static metric definition"),
            recordings_active: IntGauge::new(
                "rungs_recordings_active",
                "Live streams being recorded.",
            )
            .expect("static metric definition"),
            fleet_heartbeat_failures: prometheus::IntCounter::new(
                "rungs_fleet_heartbeat_failures_total",
                "Heartbeats that did not reach the registry.",
            )
            .expect("static metric definition"),
            fleet_forwarded: counter(
                "rungs_fleet_forwarded_requests_total",
                "Player requests for a channel live on another node, by answer.",
                &["action"],
            ),
            draining: IntGauge::new(
                "rungs_draining",
                "1 while the node drains and takes no publishers.",
            )
            .expect("static metric definition"),
            // ---- Registry cost accounting.
            registry_queries: counter(
                "rungs_registry_queries_total",
                "Registry calls (each one statement or one transaction on the database), by method.",
                &["op"],
            ),
            registry_errors: counter(
                "rungs_registry_errors_total",
                "Registry calls the database failed, by method.",
                &["op"],
            ),
            // ---- end of registry cost accounting.
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.ingest_bytes.clone()),
            Box::new(m.ingest_frames.clone()),
            Box::new(m.keyframe_interval.clone()),
            Box::new(m.ingest_rejected.clone()),
            Box::new(m.ingest_cut.clone()),
            Box::new(m.task_restarts.clone()),
            Box::new(m.reconnect_requests.clone()),
            Box::new(m.hook_calls.clone()),
            Box::new(m.hook_seconds.clone()),
            Box::new(m.ingest_dropped_packets.clone()),
            Box::new(m.tracks_dropped.clone()),
            Box::new(m.live_channels.clone()),
            Box::new(m.publishers.clone()),
            Box::new(m.parts_published.clone()),
            Box::new(m.segments_published.clone()),
            Box::new(m.audio_silence_frames.clone()),
            Box::new(m.blocked_requests.clone()),
            Box::new(m.http_connections.clone()),
            Box::new(m.http_refused_connections.clone()),
            Box::new(m.http_timed_out_connections.clone()),
            Box::new(m.http_refused_requests.clone()),
            Box::new(m.play_refused.clone()),
            Box::new(m.ingest_to_part.clone()),
            Box::new(m.start_time.clone()),
            Box::new(m.rung_psnr.clone()),
            Box::new(m.rung_ssim.clone()),
            Box::new(m.rung_frames.clone()),
            Box::new(m.rung_encode_seconds.clone()),
            Box::new(m.rung_realtime_ratio.clone()),
            Box::new(m.rung_queue_frames.clone()),
            Box::new(m.rung_dropped_gops.clone()),
            Box::new(m.transcode_latency.clone()),
            Box::new(m.whip_keyframe_requests.clone()),
            Box::new(m.whip_connect_seconds.clone()),
            Box::new(m.whip_sessions_ended.clone()),
            Box::new(m.whip_datagrams_dropped.clone()),
            Box::new(m.rungs_by_backend.clone()),
            Box::new(m.decode_backend_fallbacks.clone()),
            Box::new(m.encode_backend_fallbacks.clone()),
            Box::new(m.gpu_memory_used.clone()),
            Box::new(m.gpu_kernel_seconds.clone()),
            Box::new(m.gpu_sessions.clone()),
            Box::new(m.recording_uploaded_bytes.clone()),
            Box::new(m.recording_uploaded_segments.clone()),
            Box::new(m.recording_upload_seconds.clone()),
            Box::new(m.recording_upload_errors.clone()),
            Box::new(m.recording_dropped_segments.clone()),
            Box::new(m.recording_spool_files.clone()),
            Box::new(m.recording_spool_bytes.clone()),
            Box::new(m.recordings_active.clone()),
            Box::new(m.fleet_heartbeat_failures.clone()),
            Box::new(m.fleet_forwarded.clone()),
            Box::new(m.draining.clone()),
            // Registry cost accounting.
            Box::new(m.registry_queries.clone()),
            Box::new(m.registry_errors.clone()),
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
        let _ = self
            .tracks_dropped
            .remove_label_values(&[channel, "misaligned"]);
        for ingest in ["rtmp", "whip"] {
            let _ = self.ingest_bytes.remove_label_values(&[channel, ingest]);
        }
        let _ = self.whip_keyframe_requests.remove_label_values(&[channel]);
        let _ = self.audio_silence_frames.remove_label_values(&[channel]);
        for track in ["video", "audio"] {
            let _ = self.ingest_frames.remove_label_values(&[channel, track]);
        }
        for r in renditions {
            self.forget_rendition(channel, r);
        }
        let _ = self.rung_dropped_gops.remove_label_values(&[channel, "*"]);
    }

    /// Stops exporting one rendition of a channel (a rung the ladder dropped
    /// when the source changed): a gauge left behind would read as current.
    pub fn forget_rendition(&self, channel: &str, r: &str) {
        let _ = self.parts_published.remove_label_values(&[channel, r]);
        let _ = self.segments_published.remove_label_values(&[channel, r]);
        let _ = self.ingest_to_part.remove_label_values(&[channel, r]);
        let _ = self.rung_psnr.remove_label_values(&[channel, r]);
        let _ = self.rung_ssim.remove_label_values(&[channel, r]);
        let _ = self.rung_frames.remove_label_values(&[channel, r, "x264"]);
        let _ = self
            .rung_encode_seconds
            .remove_label_values(&[channel, r, "x264"]);
        let _ = self.rung_frames.remove_label_values(&[channel, r, "nvenc"]);
        let _ = self
            .rung_encode_seconds
            .remove_label_values(&[channel, r, "nvenc"]);
        let _ = self.rung_realtime_ratio.remove_label_values(&[channel, r]);
        let _ = self.rung_queue_frames.remove_label_values(&[channel, r]);
        let _ = self.rung_dropped_gops.remove_label_values(&[channel, r]);
        let _ = self.transcode_latency.remove_label_values(&[channel, r]);
    }
}

/// The node's metrics. One process, one registry.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// TLS on the player port (`[tls]`), in a block of its own: registered with
/// the node's registry the first time the TLS code touches them, so a node
/// serving plain HTTP exports none of them.
pub struct TlsMetrics {
    /// Handshakes that failed, per listener and reason (`timeout`: the
    /// header timeout passed first; `error`: the client or the bytes).
    pub handshake_errors: IntCounterVec,
    /// The served leaf certificate's notAfter, as a Unix timestamp.
    pub certificate_expiry: Gauge,
    /// Certificate reloads (SIGHUP), per result (`ok`, `error`: the old
    /// certificate stays).
    pub reloads: IntCounterVec,
}

pub static TLS_METRICS: LazyLock<TlsMetrics> = LazyLock::new(|| {
    let m = TlsMetrics {
        handshake_errors: counter(
            "rungs_tls_handshake_errors_total",
            "TLS handshakes that failed, by listener and reason (timeout: not done within the header timeout; error: refused or malformed).",
            &["listener", "reason"],
        ),
        certificate_expiry: Gauge::new(
            "rungs_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the TLS certificate served now, as a Unix timestamp.",
        )
        .expect("static metric definition"),
        reloads: counter(
            "rungs_tls_reloads_total",
            "TLS certificate reloads, by result (error: the previous certificate is still served).",
            &["result"],
        ),
    };
    let collectors: [Box<dyn prometheus::core::Collector>; 3] = [
        Box::new(m.handshake_errors.clone()),
        Box::new(m.certificate_expiry.clone()),
        Box::new(m.reloads.clone()),
    ];
    for c in collectors {
        METRICS
            .registry
            .register(c)
            .expect("each metric is registered once");
    }
    m
});
