//! The `rungs` command line: serve | channel | transcode | probe | config.
//! What a command does lives in the library (`rungs::node` for `serve`).
//! Exits 0, 78 (EX_CONFIG) when the configuration is at fault, 1 on any
//! other failure.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use rungs::config::{Config, Loaded};
use rungs::node;
use rungs::registry::Policy;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[path = "main/channels.rs"]
mod channels;
use channels::{PolicyArgs, patched, print_channels, with_policies};
#[path = "main/config.rs"]
mod config_cmd;

#[derive(Parser)]
#[command(
    name = "rungs",
    version,
    about = "Live-video edge node: RTMP in, low-latency HLS out"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node: RTMP ingest, LL-HLS, API and metrics.
    Serve(ServeArgs),
    /// Create, list, delete channels and rotate their stream keys.
    Channel {
        #[command(subcommand)]
        cmd: ChannelCmd,
    },
    /// Register, list and delete playback keys (ES384) for private channels.
    PlaybackKey {
        #[command(subcommand)]
        cmd: PlaybackKeyCmd,
    },
    /// Revoke a viewer's playback tokens.
    Viewer {
        #[command(subcommand)]
        cmd: ViewerCmd,
    },
    /// Transcode a file into an HLS VOD ladder as fast as the machine goes.
    Transcode(TranscodeArgs),
    /// What this machine offers (CUDA driver, GPUs, NVDEC, NVENC, NVRTC) and
    /// the backend each stage would use.
    Probe(ProbeArgs),
    /// The configuration: check it.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the configuration exactly as `serve` loads it (the file, then
    /// RUNGS_* environment overrides) and print the effective configuration
    /// as TOML, secrets redacted. Exits 78 when it is invalid.
    Check {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct ProbeArgs {
    /// TOML config file (its [gpu] section); default: $RUNGS_CONFIG, else
    /// /etc/rungs/rungs.toml if it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TranscodeArgs {
    /// TOML config file (ladders, encoder settings); default: $RUNGS_CONFIG,
    /// else /etc/rungs/rungs.toml if it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Any file FFmpeg reads with H.264 video (and AAC audio).
    #[arg(long)]
    input: PathBuf,
    /// Directory for master.m3u8 and one folder per rung.
    #[arg(long)]
    output: PathBuf,
    /// Ladder: standard (default), passthrough, or one from the config.
    #[arg(long)]
    ladder: Option<String>,
    /// Print a JSON summary on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Timed metadata: JSON lines `{"at": SECONDS, "text": "..."}` (or
    /// `"hex": "c0ffee"`), put into the output as emsg boxes.
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Encode with the live channels' low-latency x264 tuning (no B-frames,
    /// short lookahead) instead of the preset's own, which gives more
    /// quality per bit and has no latency to keep.
    #[arg(long)]
    low_latency: bool,
}

#[derive(Args)]
struct Common {
    /// TOML config file; every field has a default. Default: $RUNGS_CONFIG,
    /// else /etc/rungs/rungs.toml if it exists. RUNGS_<SECTION>__<FIELD>
    /// environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where channels and the admin token live (default ./rungs-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// RTMP listen address (default 0.0.0.0:1935).
    #[arg(long)]
    rtmp_addr: Option<SocketAddr>,
    /// HTTP listen address for players and publishers (default 0.0.0.0:8080).
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// HTTP listen address for /metrics and /api/v1 (default 127.0.0.1:8081).
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum ChannelCmd {
    /// Create a channel; it can be published to at once.
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        name: String,
        /// ABR ladder: standard (default), passthrough, or one from the config.
        #[arg(long)]
        ladder: Option<String>,
        /// Players need a signed playback token.
        #[arg(long)]
        private: bool,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a channel's settings: its private flag, its playback rules and
    /// hooks (each list given replaces that list; an empty value clears it).
    Update {
        #[command(flatten)]
        common: Common,
        id: String,
        /// true: players need a signed playback token; false: anyone plays.
        #[arg(long, action = clap::ArgAction::Set)]
        private: Option<bool>,
        #[command(flatten)]
        policy: PolicyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one channel: its URLs, rules and hooks.
    Show {
        #[command(flatten)]
        common: Common,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List channels with their publish and playback URLs.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: bool,
    },
    /// Delete a channel; a live stream on it ends.
    Delete {
        #[command(flatten)]
        common: Common,
        id: String,
    },
    /// Insert timed metadata into the channel's live stream (ID3 in an emsg
    /// box in every rendition's next part, and an EXT-X-DATERANGE). Needs
    /// the running node: it calls the node's admin API.
    Metadata {
        #[command(flatten)]
        common: Common,
        id: String,
        /// Text, carried in an ID3 TXXX frame.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        text: Option<String>,
        /// A file of up to 1024 bytes, carried in an ID3 PRIV frame.
        #[arg(long)]
        file: Option<PathBuf>,
        /// How long the event lasts, in seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// The node's admin address (default: the config's admin_addr).
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
    },
    /// Ask the channel's publisher to reconnect and publish again (Enhanced
    /// RTMP reconnect request; only a publisher that announced it can is
    /// asked), e.g. before this node is drained. Needs the running node: it
    /// calls the node's admin API.
    Reconnect {
        #[command(flatten)]
        common: Common,
        id: String,
        /// Where the publisher should reconnect: an rtmp:// or rtmps:// URL
        /// (tcUrl, without the stream key), or a reference starting with /.
        /// Default: where it is connected now.
        #[arg(long, value_name = "URL")]
        tc_url: Option<String>,
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        /// The node's admin address (default: the config's admin_addr).
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
    },
    /// Give a channel a new stream key; the old one stops working.
    RotateKey {
        #[command(flatten)]
        common: Common,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Show the channel's stream now: state, health, ingest as received,
    /// each rung, viewers. Needs the running node: it calls the node's
    /// admin API.
    Stream {
        #[command(flatten)]
        common: Common,
        id: String,
        #[arg(long)]
        json: bool,
        /// The node's admin address (default: the config's admin_addr).
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
    },
    /// List the channel's recorded stream sessions, newest first, with
    /// what happened in them (reconnects, refusals, drops, the end).
    Sessions {
        #[command(flatten)]
        common: Common,
        id: String,
        /// How many sessions.
        #[arg(long, default_value_t = rungs::serve::health::DEFAULT_SESSIONS)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PlaybackKeyCmd {
    /// Generate an ES384 key pair: the public half is stored, the private
    /// half (PKCS#8 PEM) is printed once and never stored.
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: bool,
    },
    /// Register the public half of a key pair made elsewhere.
    Import {
        #[command(flatten)]
        common: Common,
        /// PEM file with an ECDSA P-384 public key (-----BEGIN PUBLIC KEY-----).
        #[arg(long)]
        public_key: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List registered playback keys (public halves).
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: bool,
    },
    /// Delete a playback key; tokens it signed are refused.
    Delete {
        #[command(flatten)]
        common: Common,
        id: String,
    },
}

#[derive(Subcommand)]
enum ViewerCmd {
    /// Refuse every token for this viewer id issued until now.
    Revoke {
        #[command(flatten)]
        common: Common,
        viewer_id: String,
    },
}

impl Common {
    /// The configuration and where it came from.
    fn loaded(&self) -> Result<Loaded> {
        Ok(config_cmd::load(
            self.config.as_deref(),
            self.data_dir.as_deref(),
        )?)
    }

    /// The configuration, for commands that do not log: a suspicious
    /// variable is said on stderr.
    fn load(&self) -> Result<Config> {
        let loaded = self.loaded()?;
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        Ok(loaded.config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ran = match cli.cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Channel { cmd } => channel(cmd),
        Cmd::PlaybackKey { cmd } => playback_key(cmd),
        Cmd::Viewer { cmd } => viewer(cmd),
        Cmd::Transcode(args) => transcode(args),
        Cmd::Probe(args) => probe(args),
        Cmd::Config {
            cmd: ConfigCmd::Check { common },
        } => common
            .loaded()
            .and_then(|l| config_cmd::check(&l, &mut std::io::stdout().lock())),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // As `main() -> Result` writes it: the error and its causes.
            eprintln!("Error: {e:?}");
            config_cmd::exit_code(&e)
        }
    }
}

fn probe(args: ProbeArgs) -> Result<()> {
    let cfg = Common {
        config: args.config,
        data_dir: None,
    }
    .load()?;
    let found = rungs::gpu::probe::probe(&cfg.gpu);
    let machine = rungs::transcode::backend::MachineFacts::from_probe(&found, found.kernels.usable);
    // The backends come from the planner channels use, for a 1080p one.
    let plan = node::new_channel_plan(&cfg, &machine)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&found)?;
        v["backends"] = serde_json::to_value(plan.stages())?;
        v["new_channel"] = serde_json::Value::String(plan.to_string());
        serde_json::to_writer(&mut out, &v)?;
    } else {
        let stages = plan.stages();
        write!(
            out,
            "{found}\nbackends: {stages}\nnew 1080p channel: {plan}"
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn transcode(args: TranscodeArgs) -> Result<()> {
    let loaded = Common {
        config: args.config.clone(),
        data_dir: None,
    }
    .loaded()?;
    // Warnings only: a stage that falls back to the CPU says so.
    rungs::logging::init(loaded.config.log.format, "warn");
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cfg = loaded.config;
    let gpu = node::open_gpu(&cfg)?;
    let mut pipeline = node::pipeline_config(&cfg, gpu)?;
    // `[transcode] low_latency` is the live channels' setting: a file has
    // nobody waiting for its first segment.
    pipeline.encoder.low_latency = args.low_latency;
    if let Some(l) = args.ladder {
        pipeline.ladders.check(&l)?;
        pipeline.ladder = l;
    }
    let metadata = match &args.metadata {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            rungs::hub::offline::parse_sidecar(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let report = rungs::hub::offline::run(rungs::hub::offline::Options {
        input: &args.input,
        output: &args.output,
        pipeline,
        package: cfg.hls.clone(),
        progress: !args.json && std::io::stderr().is_terminal(),
        metadata,
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} frames in {:.2} s ({:.1} fps), ladder {} -> {}/master.m3u8",
        report.frames, report.seconds, report.fps, report.ladder, report.output
    )?;
    for r in &report.renditions {
        let size = match (r.width, r.height) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "-".into(),
        };
        let quality = match (r.psnr_db, r.ssim) {
            (Some(p), Some(s)) => format!("  PSNR {p:.2} dB  SSIM {s:.4}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {:<8} {:>9}  {:>6} kb/s  {:>9} bytes{quality}",
            r.name,
            size,
            r.bitrate_bps / 1000,
            r.bytes
        )?;
    }
    Ok(())
}

fn channel(cmd: ChannelCmd) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ChannelCmd::Create {
            common,
            name,
            ladder,
            private,
            policy,
            json,
        } => {
            let cfg = common.load()?;
            let ladder = ladder.unwrap_or_else(|| cfg.transcode.default_ladder.clone());
            cfg.ladders()?.check(&ladder)?;
            // Checked before the channel exists, so a bad rule creates nothing.
            let policy = patched(&cfg, Policy::default(), policy.patch())?;
            let reg = node::open_registry(&cfg)?;
            let ch = reg.create_with(&name, &ladder, private)?;
            if policy != Policy::default() {
                reg.set_policy(&ch.id, &policy)?;
            }
            print_channels(&mut out, &cfg, &[(ch, policy)], json, true)?;
        }
        ChannelCmd::Update {
            common,
            id,
            private,
            policy,
            json,
        } => {
            let cfg = common.load()?;
            let reg = node::open_registry(&cfg)?;
            let patch = policy.patch();
            let stored = reg.policy(&id)?;
            let policy = if patch.is_empty() {
                stored
            } else {
                let p = patched(&cfg, stored, patch)?;
                reg.set_policy(&id, &p)?;
                p
            };
            let ch = match private {
                Some(p) => reg.set_private(&id, p)?,
                None => reg.get(&id)?,
            };
            print_channels(&mut out, &cfg, &[(ch, policy)], json, true)?;
        }
        ChannelCmd::Show { common, id, json } => {
            let cfg = common.load()?;
            let reg = node::open_registry(&cfg)?;
            let ch = reg.get(&id)?;
            let policy = reg.policy(&id)?;
            print_channels(&mut out, &cfg, &[(ch, policy)], json, true)?;
        }
        ChannelCmd::List { common, json } => {
            let cfg = common.load()?;
            let reg = node::open_registry(&cfg)?;
            let chs = with_policies(&reg, reg.list()?)?;
            print_channels(&mut out, &cfg, &chs, json, false)?;
        }
        ChannelCmd::Delete { common, id } => {
            let cfg = common.load()?;
            node::open_registry(&cfg)?.delete(&id)?;
            writeln!(out, "deleted channel {id}")?;
        }
        ChannelCmd::Metadata {
            common,
            id,
            text,
            file,
            duration,
            admin_addr,
        } => {
            let cfg = common.load()?;
            let body = match (text, file) {
                (Some(t), _) => (t.into_bytes(), "text/plain; charset=utf-8"),
                (None, Some(f)) => (std::fs::read(&f)?, "application/octet-stream"),
                (None, None) => anyhow::bail!("give --text or --file"),
            };
            let answer = post_metadata(&cfg, admin_addr, &id, body, duration)?;
            writeln!(out, "{answer}")?;
        }
        ChannelCmd::Reconnect {
            common,
            id,
            tc_url,
            json,
            admin_addr,
        } => {
            let cfg = common.load()?;
            let answer = admin_call(
                &cfg,
                admin_addr,
                &format!("/api/v1/channels/{id}/reconnect"),
                Some((reconnect_body(tc_url.as_deref()), "application/json")),
            )?;
            if json {
                writeln!(out, "{answer}")?;
            } else {
                writeln!(out, "{}", reconnect_text(&id, tc_url.as_deref()))?;
            }
        }
        ChannelCmd::RotateKey { common, id, json } => {
            let cfg = common.load()?;
            let reg = node::open_registry(&cfg)?;
            let ch = reg.rotate_key(&id)?;
            let chs = with_policies(&reg, vec![ch])?;
            print_channels(&mut out, &cfg, &chs, json, true)?;
        }
        ChannelCmd::Stream {
            common,
            id,
            json,
            admin_addr,
        } => {
            let cfg = common.load()?;
            let answer = admin_call(
                &cfg,
                admin_addr,
                &format!("/api/v1/channels/{id}/stream"),
                None,
            )?;
            if json {
                writeln!(out, "{answer}")?;
            } else {
                let v = serde_json::from_str(&answer)?;
                write!(out, "{}", rungs::serve::health::stream_text(&v))?;
            }
        }
        ChannelCmd::Sessions {
            common,
            id,
            limit,
            json,
        } => {
            let cfg = common.load()?;
            let reg = node::open_registry(&cfg)?;
            reg.get(&id)?;
            let v = rungs::serve::health::sessions_view(&id, &reg.sessions(&id, limit)?);
            if json {
                writeln!(out, "{v}")?;
            } else {
                write!(out, "{}", rungs::serve::health::sessions_text(&v))?;
            }
        }
    }
    Ok(())
}

/// The body of a reconnect request: `{}`, or the new server.
fn reconnect_body(tc_url: Option<&str>) -> Vec<u8> {
    match tc_url {
        Some(url) => serde_json::json!({ "tc_url": url })
            .to_string()
            .into_bytes(),
        None => b"{}".to_vec(),
    }
}

/// What `channel reconnect` prints once the node has sent the request (a
/// refusal is the node's error, as for every admin call).
fn reconnect_text(id: &str, tc_url: Option<&str>) -> String {
    let to = tc_url.map_or_else(String::new, |u| format!(" to {u}"));
    format!(
        "channel {id}: its publisher was asked to reconnect{to}; the stream continues if it \
         is back within the reconnect grace period"
    )
}

/// Calls the running node's metadata endpoint; its JSON answer, or its error.
fn post_metadata(
    cfg: &Config,
    admin_addr: Option<SocketAddr>,
    id: &str,
    body: (Vec<u8>, &str),
    duration: Option<f64>,
) -> Result<String> {
    let mut path = format!("/api/v1/channels/{id}/metadata");
    if let Some(d) = duration {
        path.push_str(&format!("?duration={d}"));
    }
    admin_call(cfg, admin_addr, &path, Some(body))
}

/// Calls `path` of the running node's admin API (a POST of `body`, else a
/// GET) with the admin token from the config or the data dir; the node's
/// answer, or its error.
fn admin_call(
    cfg: &Config,
    admin_addr: Option<SocketAddr>,
    path: &str,
    body: Option<(Vec<u8>, &str)>,
) -> Result<String> {
    let token = match &cfg.api.admin_token {
        Some(t) => t.clone(),
        None => {
            let path = cfg.data_dir.join("admin-token");
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "reading {}: {e} (has the node run with this data dir?)",
                        path.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    let mut addr = admin_addr.unwrap_or(cfg.admin_addr);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}{path}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(async {
        // The admin API is plain http: no trust store needed.
        let (client, _) = rungs::hooks::http_client(reqwest::Client::builder)?;
        let req = match body {
            Some((body, content_type)) => client
                .post(&url)
                .header("content-type", content_type)
                .body(body),
            None => client.get(&url),
        };
        let r = req.bearer_auth(&token).send().await?;
        let status = r.status();
        Ok::<_, reqwest::Error>((status, r.text().await?))
    })?;
    if !status.is_success() {
        anyhow::bail!("the node answered {status}: {}", text.trim());
    }
    Ok(text.trim().to_string())
}

fn playback_key(cmd: PlaybackKeyCmd) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        PlaybackKeyCmd::Create { common, json } => {
            let cfg = common.load()?;
            let (private, public) = rungs::serve::access::generate_key_pair()?;
            let key = node::open_registry(&cfg)?.add_playback_key(&public)?;
            if json {
                let created = rungs::serve::api::CreatedKey {
                    key,
                    private_key: private,
                };
                serde_json::to_writer(&mut out, &created)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "playback key {id} registered (ES384). Its private key, shown this once and \
                     stored nowhere (sign playback tokens with it, kid \"{id}\"):\n{private}",
                    id = key.id
                )?;
            }
        }
        PlaybackKeyCmd::Import {
            common,
            public_key,
            json,
        } => {
            let cfg = common.load()?;
            let pem = std::fs::read_to_string(&public_key)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", public_key.display()))?;
            let public = rungs::serve::access::normalize_public_pem(&pem)?;
            let key = node::open_registry(&cfg)?.add_playback_key(&public)?;
            if json {
                serde_json::to_writer(&mut out, &key)?;
                writeln!(out)?;
            } else {
                writeln!(out, "playback key {} registered", key.id)?;
            }
        }
        PlaybackKeyCmd::List { common, json } => {
            let cfg = common.load()?;
            let keys = node::open_registry(&cfg)?.playback_keys()?;
            if json {
                serde_json::to_writer(&mut out, &keys)?;
                writeln!(out)?;
            } else {
                for k in &keys {
                    writeln!(out, "{} (created {})\n{}", k.id, k.created_at, k.public_pem)?;
                }
                if keys.is_empty() {
                    writeln!(
                        out,
                        "no playback keys; create one with `rungs playback-key create`"
                    )?;
                }
            }
        }
        PlaybackKeyCmd::Delete { common, id } => {
            let cfg = common.load()?;
            node::open_registry(&cfg)?.delete_playback_key(&id)?;
            writeln!(out, "deleted playback key {id}")?;
        }
    }
    Ok(())
}

fn viewer(cmd: ViewerCmd) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ViewerCmd::Revoke { common, viewer_id } => {
            let cfg = common.load()?;
            let rev = node::open_registry(&cfg)?.revoke_viewer(&viewer_id)?;
            writeln!(
                out,
                "viewer {} revoked: its tokens issued until {} (unix seconds) are refused",
                rev.viewer_id, rev.revoked_at
            )?;
        }
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    // Loaded before logging starts, so that `[log] format` applies to every
    // line; an error loading it is printed by `main` as any other.
    let loaded = args.common.loaded()?;
    rungs::logging::init(loaded.config.log.format, "info");
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %loaded.describe(),
        "rungs starting"
    );
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut cfg = loaded.config;
    if let Some(a) = args.rtmp_addr {
        cfg.rtmp_addr = a;
    }
    if let Some(a) = args.http_addr {
        cfg.http_addr = a;
    }
    if let Some(a) = args.admin_addr {
        cfg.admin_addr = a;
    }
    config_cmd::start_checks(&cfg)?;
    Ok(node::serve(cfg)?)
}

#[cfg(test)]
#[path = "main/tests.rs"]
mod tests;
