//! Node configuration from TOML; every field has a working default.

use crate::gpu::GpuConfig;
use crate::package::PackageConfig;
use crate::transcode::ladder::{Ladders, RungSpec};
use crate::transcode::scale::Kernel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod sources;
pub use sources::{DEFAULT_PATH, ENV_PREFIX, Loaded, config_path};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value in the file is wrong; `reason` names the key and never
    /// shows a secret.
    #[error("config {path}: {reason}")]
    Value { path: PathBuf, reason: String },
    /// A `RUNGS_*` override is wrong.
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Operator listener: `/metrics` and `/api/v1`. Loopback by default, so
    /// that neither is reachable from the internet unless an operator says so.
    pub admin_addr: SocketAddr,
    /// Base of every URL the node prints or returns for players and WHIP
    /// publishers: scheme, host, optional port and optional path prefix, e.g.
    /// `https://edge1.example.com` or `https://cdn.example.com/live`. The
    /// node serves under the path prefix too. Empty: `http://localhost:<http
    /// port>`.
    pub public_url: String,
    /// RTMP URL publishers are told, e.g. `rtmp://ingest.example.com/live`.
    /// Empty: `rtmp://<public_url's host>:<rtmp port>/live`.
    pub public_rtmp_url: String,
    /// This node in a fleet: its id, region and capacity in the live map.
    pub node: NodeConfig,
    /// How nodes sharing one registry find each other's live channels.
    pub fleet: FleetConfig,
    /// Taking the node out of service (SIGTERM, `POST /api/v1/node/drain`).
    pub drain: DrainConfig,
    /// Where channels, keys, sessions, recordings and the live map live.
    pub registry: crate::registry::RegistryConfig,
    /// HTTPS (and HTTP/2) on the player and WHIP port.
    pub tls: TlsConfig,
    /// Log output.
    pub log: LogConfig,
    pub api: ApiConfig,
    pub http: HttpConfig,
    pub ingest: IngestConfig,
    /// Parts, segments and playlist window (`part_target_s`, `segment_target_s`,
    /// `playlist_segments`).
    pub hls: PackageConfig,
    pub transcode: TranscodeConfig,
    pub player: PlayerConfig,
    pub gpu: GpuConfig,
    pub whip: WhipConfig,
    /// Authorization callbacks to the operator's backend.
    pub hooks: HooksConfig,
    /// Where a player's address and country come from, for channels'
    /// network and country rules.
    pub access: AccessConfig,
    /// Recording streams to object storage (`src/record/`).
    pub recording: crate::record::RecordingConfig,
}

/// This node as the live map shows it to the rest of the fleet.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique in the fleet. Empty: the host name.
    pub id: String,
    /// A label for dashboards and operators (`eu-west`, `fra1`).
    pub region: String,
    /// Live channels this node takes; one more publisher is refused. 0: no limit.
    pub capacity: u32,
}

/// What a node does with a player asking for a channel live on another node.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// 307 to the holding node's public URL.
    Redirect,
    /// Fetch from the holding node and answer with its response.
    Proxy,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// A node (and the channels it holds) leaves the live map this long after
    /// its last heartbeat.
    pub lease_s: f64,
    /// How often a node renews its lease.
    pub heartbeat_s: f64,
    /// `"redirect"` (307) or `"proxy"` for channels live elsewhere.
    pub forward: Forward,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            lease_s: 15.0,
            heartbeat_s: 5.0,
            forward: Forward::Redirect,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// After a drain starts, live streams still running this long are ended
    /// (ENDLIST) and the node exits.
    pub deadline_s: f64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig { deadline_s: 300.0 }
    }
}

pub use crate::logging::LogFormat;

/// `[tls]`: both files set turn HTTPS (with HTTP/2) on for the player and
/// WHIP port; both empty keep plain HTTP. Loaded by `serve::tls`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` for people, `"json"` (one object per line) for log pipelines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
        }
    }
}

/// Serializes a duration as decimal seconds, as the config file writes it
/// (`part_target_s = 0.2`).
pub fn as_seconds<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.as_secs_f64())
}

pub use crate::logging::{REDACTED, redact_url};

/// A config value that may hold a secret, and whether it holds one at all.
pub trait Secret {
    /// Unset: nothing to hide, and printing it as unset keeps the printed
    /// config loadable with the same meaning.
    fn is_unset(&self) -> bool;
}

impl Secret for String {
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

impl Secret for Option<String> {
    fn is_unset(&self) -> bool {
        self.as_deref().is_none_or(str::is_empty)
    }
}

/// Serializes a secret as [`REDACTED`] (an unset one as empty), so printing a
/// config never shows one.
pub fn redacted<T: Secret, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    if value.is_unset() {
        s.serialize_str("")
    } else {
        s.serialize_str(REDACTED)
    }
}

/// Serializes a URL with its password and the values of its query string
/// replaced by [`REDACTED`]: callback and database URLs carry tokens and
/// passwords there, while scheme, host and path are what an operator checks.
pub fn redacted_url<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(value))
}

/// How the node tells where a player is (`src/serve/geo.rs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// A MaxMind GeoIP2 or GeoLite2 Country (or City) database, `.mmdb`,
    /// opened once at start. Empty: no country is known, so a channel with
    /// `allow_countries` refuses everyone and `deny_countries` refuses no one.
    pub geoip_database: PathBuf,
    /// Addresses or networks (`10.0.0.0/8`) of the proxies or CDN in front
    /// of the node. Only from these is `client_address_header` believed.
    pub trusted_proxies: Vec<String>,
    /// Header a trusted proxy puts the client's address in: a comma-separated
    /// list, each proxy appending the address it saw (`x-forwarded-for`), or
    /// a single address (`x-real-ip`, `cf-connecting-ip`).
    pub client_address_header: String,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            geoip_database: PathBuf::new(),
            trusted_proxies: Vec::new(),
            client_address_header: "x-forwarded-for".into(),
        }
    }
}

impl AccessConfig {
    /// `trusted_proxies` parsed.
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                parse_network(s).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "access.trusted_proxies: {s:?} is not an address or a network (CIDR)"
                    ))
                })
            })
            .collect()
    }

    /// `client_address_header` as a header name.
    pub fn address_header(&self) -> Result<axum::http::HeaderName, ConfigError> {
        let name = self.client_address_header.trim();
        let header = axum::http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::Invalid(format!(
                "access.client_address_header = {name:?} is not an HTTP header name"
            ))
        })?;
        if header == axum::http::header::FORWARDED {
            // RFC 7239's `for=` syntax is not read; every proxy that writes
            // it can also write X-Forwarded-For.
            return Err(ConfigError::Invalid(
                "access.client_address_header: \"forwarded\" (RFC 7239) is not supported; use x-forwarded-for".into(),
            ));
        }
        Ok(header)
    }
}

/// A network as an operator writes it: `10.0.0.0/8`, `2001:db8::/32`, or a
/// bare address (one host). Host bits are cleared (`10.1.2.3/8` is
/// `10.0.0.0/8`), so what is stored and shown is what is matched.
pub fn parse_network(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
}

/// Authorization hooks: the node asks the operator's backend, over HTTP(S),
/// whether a publish or a playback may go ahead (`src/hooks.rs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// POSTed on every publish (RTMP and WHIP) once the stream key matched.
    /// Empty: no hook.
    #[serde(serialize_with = "redacted_url")]
    pub publish_url: String,
    /// POSTed when a player asks for a channel's multivariant playlist.
    /// Empty: no hook.
    #[serde(serialize_with = "redacted_url")]
    pub play_url: String,
    /// How long the backend has to answer.
    pub timeout_ms: u64,
    /// What a timeout or an unreachable backend means: `"deny"` or `"allow"`.
    pub on_timeout: HookPolicy,
    /// How long an answer is reused for the same question.
    pub cache_s: f64,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HookPolicy {
    Allow,
    Deny,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            publish_url: String::new(),
            play_url: String::new(),
            timeout_ms: 1000,
            on_timeout: HookPolicy::Deny,
            cache_s: 10.0,
        }
    }
}

/// WebRTC ingest (WHIP, RFC 9725): one UDP port for every session, ICE-lite.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhipConfig {
    /// The UDP socket every WebRTC session shares.
    pub udp_addr: SocketAddr,
    /// Addresses announced as ICE host candidates, e.g. the public address of
    /// a 1:1 NAT. Empty: every local address of `udp_addr`'s family.
    pub ips: Vec<std::net::IpAddr>,
    /// A session whose packets stop for this long (without a DELETE) ends.
    pub session_timeout_s: f64,
    /// WHIP sessions at once; one more is answered 503.
    pub max_sessions: usize,
    /// AAC bitrate of the audio rendition made from the publisher's Opus.
    pub audio_bitrate_kbps: u32,
}

impl Default for WhipConfig {
    fn default() -> Self {
        WhipConfig {
            udp_addr: SocketAddr::from(([0, 0, 0, 0], 8189)),
            ips: Vec::new(),
            session_timeout_s: 10.0,
            max_sessions: 256,
            audio_bitrate_kbps: 128,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeConfig {
    /// Ladder of channels created without one: `standard`, `passthrough` or
    /// a name from `ladders`.
    pub default_ladder: String,
    /// Custom ladders, e.g. `mobile = [{ name = "540p", height = 540, bitrate_kbps = 1500 }]`.
    /// A ladder named `standard` replaces the built-in one.
    pub ladders: BTreeMap<String, Vec<RungSpec>>,
    /// x264 preset for every rung.
    pub preset: String,
    /// Live channels: short lookahead and no B-frames, so each rung adds only a
    /// few frames of delay. (`rungs transcode` uses the preset's own tuning
    /// unless given `--low-latency`.)
    pub low_latency: bool,
    /// x264 threads per rung (0: x264 decides; 1 suits many rungs on few cores).
    pub encoder_threads: usize,
    /// Source decoder threads (each one past the first delays output a frame).
    pub decoder_threads: usize,
    /// Downscaling kernel of every rung, CPU and GPU alike: `bicubic`
    /// (libswscale's, more quality per bit at ladder bitrates) or `lanczos`
    /// (sharper, for high bitrates and clean sources).
    pub scaler: Kernel,
    /// Scaled frames queued per rung before it drops a GOP.
    pub queue_frames: usize,
    /// Decode one GOP in this many of each rung's output and measure PSNR/SSIM on
    /// its every frame (0: off).
    pub quality_every_gops: u32,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            default_ladder: crate::transcode::ladder::STANDARD.into(),
            ladders: BTreeMap::new(),
            preset: "veryfast".into(),
            low_latency: true,
            encoder_threads: 1,
            decoder_threads: 1,
            scaler: Kernel::default(),
            queue_frames: 30,
            quality_every_gops: 5,
        }
    }
}

/// `Debug` leaves the token out.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer token for `/api/v1`. When unset, one is generated at first start
    /// into `<data_dir>/admin-token` (mode 0600).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redacted")]
    pub admin_token: Option<String>,
}

/// Limits of the HTTP listeners, so that a node on the open internet cannot be
/// held by idle or half-open connections or by parked requests.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request head must arrive whole within this long of its first byte.
    pub header_timeout_s: f64,
    /// A connection with no request in flight and no bytes moving for this
    /// long is closed (keep-alive between requests, a reader that stopped).
    pub idle_timeout_s: f64,
    /// Open connections on the player listener; one more is answered 503
    /// with Retry-After and closed, and counted (reason
    /// `too_many_connections`).
    pub max_connections: usize,
    /// Requests parked by blocking reload (playlists and hinted parts) on the
    /// whole node; one more is answered 503 with Retry-After at once.
    pub max_blocked_requests: usize,
    /// Serve `/metrics` and `/api/v1` on the player port too (the API still
    /// behind the admin token). Off: they are on `admin_addr` only.
    pub admin_on_player_port: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_s: 10.0,
            idle_timeout_s: 60.0,
            max_connections: 16_384,
            max_blocked_requests: 10_000,
            admin_on_player_port: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// How long a channel waits for its publisher to come back before the
    /// stream ends.
    pub reconnect_grace_s: f64,
    /// How long an ended stream's playlists stay up (with EXT-X-ENDLIST) before
    /// the channel answers 404.
    pub ended_linger_s: f64,
    /// Packets buffered between a publisher and its channel's packager.
    pub queue_packets: usize,
    /// RTMP connections open at once; one more is closed at accept and
    /// counted (reason `too_many_connections`), so a connection flood cannot
    /// exhaust memory or file descriptors.
    pub max_connections: usize,
    /// RTMP connections open at once from one client address (an IPv4
    /// address, or an IPv6 /64: what one host gets); one more is closed at
    /// accept and counted (reason `too_many_connections_per_address`), so one
    /// host cannot take every slot. Raise it when publishers come through a
    /// proxy or NAT that shares one address.
    pub max_connections_per_address: usize,
    /// Seconds an RTMP connection has from accept to an accepted publish
    /// (handshake, connect, stream key checked); then it is closed and
    /// counted (reason `no_publish_timeout`). A real encoder needs well under
    /// a second.
    pub auth_timeout_s: f64,
    /// What one publisher may send (RTMP and WHIP alike).
    pub limits: IngestLimitsConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlayerConfig {
    /// hls.js build served to the `/play/<id>` page.
    pub hls_js: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./rungs-data"),
            rtmp_addr: SocketAddr::from(([0, 0, 0, 0], 1935)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            api: ApiConfig::default(),
            http: HttpConfig::default(),
            ingest: IngestConfig::default(),
            hls: PackageConfig::default(),
            transcode: TranscodeConfig::default(),
            player: PlayerConfig::default(),
            gpu: GpuConfig::default(),
            whip: WhipConfig::default(),
            hooks: HooksConfig::default(),
            access: AccessConfig::default(),
            recording: crate::record::RecordingConfig::default(),
            public_url: String::new(),
            public_rtmp_url: String::new(),
            node: NodeConfig::default(),
            fleet: FleetConfig::default(),
            drain: DrainConfig::default(),
            registry: crate::registry::RegistryConfig::default(),
            tls: TlsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            reconnect_grace_s: 10.0,
            ended_linger_s: 30.0,
            queue_packets: 2048,
            max_connections: 1024,
            max_connections_per_address: 16,
            auth_timeout_s: 10.0,
            limits: IngestLimitsConfig::default(),
        }
    }
}

impl Default for PlayerConfig {
    fn default() -> Self {
        PlayerConfig {
            hls_js: PathBuf::from("node_modules/hls.js/dist/hls.min.js"),
        }
    }
}

fn seconds(name: &str, v: f64, min: f64, max: f64) -> Result<Duration, ConfigError> {
    if !(min..=max).contains(&v) {
        return Err(ConfigError::Invalid(format!(
            "{name} = {v} is outside {min}..={max} seconds"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Config {
    /// Reads `path` if given, else the defaults; no environment overrides
    /// (see [`Config::load_with_env`]).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Config::load_with_env(path, std::iter::empty()).map(|l| l.config)
    }

    /// Built-in ladders plus the configured ones.
    pub fn ladders(&self) -> Result<Ladders, ConfigError> {
        let l = Ladders::with_custom(&self.transcode.ladders)
            .map_err(|e| ConfigError::Invalid(format!("transcode.ladders: {e}")))?;
        l.check(&self.transcode.default_ladder)
            .map_err(|e| ConfigError::Invalid(format!("transcode.default_ladder: {e}")))?;
        Ok(l)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.ladders()?;
        // Also checked where the node reads it; here so that `rungs config
        // check` says so before a start does.
        if self.api.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid(
                "api.admin_token must be at least 16 characters".into(),
            ));
        }
        if !(2..=600).contains(&self.transcode.queue_frames) {
            return Err(ConfigError::Invalid(
                "transcode.queue_frames must be 2..=600".into(),
            ));
        }
        self.reconnect_grace()?;
        self.ended_linger()?;
        self.whip_session_timeout()?;
        if self.whip.max_sessions == 0 {
            return Err(ConfigError::Invalid(
                "whip.max_sessions must be at least 1".into(),
            ));
        }
        if !(32..=512).contains(&self.whip.audio_bitrate_kbps) {
            return Err(ConfigError::Invalid(
                "whip.audio_bitrate_kbps must be 32..=512".into(),
            ));
        }
        let (part, seg) = (self.hls.part_target, self.hls.segment_target);
        if !(0.05..=2.0).contains(&part.as_secs_f64()) {
            return Err(ConfigError::Invalid(format!(
                "hls.part_target_s = {} is outside 0.05..=2 seconds",
                part.as_secs_f64()
            )));
        }
        if !(1.0..=10.0).contains(&seg.as_secs_f64()) {
            return Err(ConfigError::Invalid(format!(
                "hls.segment_target_s = {} is outside 1..=10 seconds",
                seg.as_secs_f64()
            )));
        }
        if seg < part * 2 {
            return Err(ConfigError::Invalid(
                "hls.segment_target_s must be at least twice hls.part_target_s".into(),
            ));
        }
        if self.hls.playlist_segments < 8 {
            return Err(ConfigError::Invalid(
                "hls.playlist_segments must be at least 8 so delta updates can skip".into(),
            ));
        }
        if self.ingest.queue_packets < 64 {
            return Err(ConfigError::Invalid(
                "ingest.queue_packets must be at least 64".into(),
            ));
        }
        if self.ingest.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "ingest.max_connections must be at least 1".into(),
            ));
        }
        if self.ingest.max_connections_per_address == 0 {
            return Err(ConfigError::Invalid(
                "ingest.max_connections_per_address must be at least 1".into(),
            ));
        }
        self.auth_timeout()?;
        self.header_timeout()?;
        self.idle_timeout()?;
        if self.http.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "http.max_connections must be at least 1".into(),
            ));
        }
        if self.http.max_blocked_requests == 0 {
            return Err(ConfigError::Invalid(
                "http.max_blocked_requests must be at least 1".into(),
            ));
        }
        self.access.trusted_networks()?;
        self.access.address_header()?;
        self.recording_store()?;
        self.public_base()?;
        self.rtmp_public()?;
        self.lease()?;
        self.heartbeat()?;
        self.drain_deadline()?;
        Ok(())
    }

    pub fn reconnect_grace(&self) -> Result<Duration, ConfigError> {
        seconds(
            "ingest.reconnect_grace_s",
            self.ingest.reconnect_grace_s,
            0.0,
            3600.0,
        )
    }

    pub fn ended_linger(&self) -> Result<Duration, ConfigError> {
        seconds(
            "ingest.ended_linger_s",
            self.ingest.ended_linger_s,
            0.0,
            3600.0,
        )
    }

    pub fn auth_timeout(&self) -> Result<Duration, ConfigError> {
        seconds(
            "ingest.auth_timeout_s",
            self.ingest.auth_timeout_s,
            1.0,
            600.0,
        )
    }

    pub fn whip_session_timeout(&self) -> Result<Duration, ConfigError> {
        seconds(
            "whip.session_timeout_s",
            self.whip.session_timeout_s,
            1.0,
            3600.0,
        )
    }

    pub fn header_timeout(&self) -> Result<Duration, ConfigError> {
        seconds(
            "http.header_timeout_s",
            self.http.header_timeout_s,
            0.1,
            600.0,
        )
    }

    pub fn idle_timeout(&self) -> Result<Duration, ConfigError> {
        seconds("http.idle_timeout_s", self.http.idle_timeout_s, 0.1, 3600.0)
    }

    pub fn lease(&self) -> Result<Duration, ConfigError> {
        seconds("fleet.lease_s", self.fleet.lease_s, 1.0, 3600.0)
    }

    pub fn heartbeat(&self) -> Result<Duration, ConfigError> {
        let beat = seconds("fleet.heartbeat_s", self.fleet.heartbeat_s, 0.1, 600.0)?;
        // Two beats per lease at least, so one lost heartbeat costs no channel.
        if beat.as_secs_f64() * 2.0 > self.fleet.lease_s {
            return Err(ConfigError::Invalid(
                "fleet.heartbeat_s must be at most half of fleet.lease_s".into(),
            ));
        }
        Ok(beat)
    }

    /// What the recording store checks as it opens, without opening it
    /// (that creates folders): so that `rungs config check` catches it.
    fn recording_store(&self) -> Result<(), ConfigError> {
        let r = &self.recording;
        if !(r.thumbnail_interval_s >= 0.0 && r.upload_retry_max_s > 0.0) {
            return Err(ConfigError::Invalid(
                "recording.thumbnail_interval_s must be >= 0 and recording.upload_retry_max_s > 0"
                    .into(),
            ));
        }
        let store = r.store.trim();
        let fine = store.is_empty()
            || store
                .strip_prefix("file://")
                .is_some_and(|p| p.starts_with('/'))
            || store
                .strip_prefix("s3://")
                .is_some_and(|b| !b.is_empty() && !b.starts_with('/'));
        if !fine {
            return Err(ConfigError::Invalid(format!(
                "recording.store = {store:?}: expected \"\" (the data dir), file:///DIR or \
                 s3://BUCKET[/PREFIX]"
            )));
        }
        Ok(())
    }

    pub fn drain_deadline(&self) -> Result<Duration, ConfigError> {
        seconds("drain.deadline_s", self.drain.deadline_s, 0.0, 86400.0)
    }

    /// `public_url` parsed, or `http://localhost:<http port>`.
    fn public_base(&self) -> Result<url::Url, ConfigError> {
        let text = if self.public_url.is_empty() {
            format!("http://localhost:{}", self.http_addr.port())
        } else {
            self.public_url.clone()
        };
        let bad = |why: &str| ConfigError::Invalid(format!("public_url = {text:?}: {why}"));
        let url = url::Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("a host is needed"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad("only scheme, host, port and a path prefix are allowed"));
        }
        Ok(url)
    }

    fn rtmp_public(&self) -> Result<String, ConfigError> {
        if !self.public_rtmp_url.is_empty() {
            let u = url::Url::parse(&self.public_rtmp_url).map_err(|e| {
                ConfigError::Invalid(format!("public_rtmp_url = {:?}: {e}", self.public_rtmp_url))
            })?;
            if !matches!(u.scheme(), "rtmp" | "rtmps") {
                return Err(ConfigError::Invalid(format!(
                    "public_rtmp_url = {:?}: the scheme must be rtmp or rtmps",
                    self.public_rtmp_url
                )));
            }
            return Ok(self.public_rtmp_url.trim_end_matches('/').to_string());
        }
        let base = self.public_base()?;
        let host = base.host_str().unwrap_or("localhost");
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Ok(format!("rtmp://{host}:{}/live", self.rtmp_addr.port()))
    }

    /// `<public_url>/whip/<id>`, the WHIP endpoint of a channel.
    pub fn whip_ingest_url(&self, channel_id: &str) -> String {
        format!("{}/whip/{channel_id}", self.http_base_url())
    }

    /// `rtmp://host:port/live`, what a publisher puts in its server field.
    pub fn rtmp_ingest_url(&self) -> String {
        // Checked at load.
        self.rtmp_public().unwrap_or_default()
    }

    /// Base of every URL players and WHIP publishers are given: `public_url`
    /// without a trailing slash.
    pub fn http_base_url(&self) -> String {
        // Checked at load.
        self.public_base()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }

    /// The path prefix of `public_url` (`/live`), or "" when it has none.
    /// The player routes are served under it.
    pub fn path_prefix(&self) -> String {
        self.public_base()
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;

/// Caps on each publisher's stream, measured in media time; 0 is no cap. A
/// publisher over one is cut with a log line and
/// `rungs_ingest_cut_total{reason="bitrate"|"frame_size"|"frame_rate"}`, so
/// one key holder cannot take the node's memory (the live window holds
/// seconds of the source) or its CPU.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestLimitsConfig {
    /// Video and audio together, averaged over 4 s of media.
    pub max_bitrate_kbps: u64,
    pub max_width: u32,
    pub max_height: u32,
    pub max_frame_rate: f64,
}

impl Default for IngestLimitsConfig {
    fn default() -> Self {
        // Room for 4K60 at a generous contribution bit rate.
        IngestLimitsConfig {
            max_bitrate_kbps: 60_000,
            max_width: 4096,
            max_height: 4096,
            max_frame_rate: 120.0,
        }
    }
}

impl IngestLimitsConfig {
    pub fn hub(&self) -> crate::hub::IngestLimits {
        crate::hub::IngestLimits {
            max_bitrate_bps: (self.max_bitrate_kbps > 0).then(|| self.max_bitrate_kbps * 1000),
            max_width: (self.max_width > 0).then_some(self.max_width),
            max_height: (self.max_height > 0).then_some(self.max_height),
            max_frame_rate: (self.max_frame_rate > 0.0).then_some(self.max_frame_rate),
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<secret>"),
            )
            .finish()
    }
}
