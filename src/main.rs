//! The `rungs` command line: serve | channel | transcode | probe. What a
//! command does lives in the library (`rungs::node` for `serve`).

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use rungs::config::Config;
use rungs::node;
use rungs::registry::Channel;
use rungs::serve::api::ChannelView;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

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
}

#[derive(Args)]
struct ProbeArgs {
    /// TOML config file (its [gpu] section).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TranscodeArgs {
    /// TOML config file (ladders, encoder settings).
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
}

#[derive(Args)]
struct Common {
    /// TOML config file; every field has a default.
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
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a channel's settings (its private flag).
    Update {
        #[command(flatten)]
        common: Common,
        id: String,
        /// true: players need a signed playback token; false: anyone plays.
        #[arg(long, action = clap::ArgAction::Set)]
        private: Option<bool>,
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
    /// Give a channel a new stream key; the old one stops working.
    RotateKey {
        #[command(flatten)]
        common: Common,
        id: String,
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
    fn load(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        Ok(cfg)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Channel { cmd } => channel(cmd),
        Cmd::PlaybackKey { cmd } => playback_key(cmd),
        Cmd::Viewer { cmd } => viewer(cmd),
        Cmd::Transcode(args) => transcode(args),
        Cmd::Probe(args) => probe(args),
    }
}

fn probe(args: ProbeArgs) -> Result<()> {
    let cfg = Config::load(args.config.as_deref())?;
    let found = rungs::gpu::probe::probe(&cfg.gpu);
    let machine = rungs::transcode::backend::MachineFacts::from_probe(&found, found.nvrtc.usable);
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
    // Warnings only: a stage that falls back to the CPU says so.
    init_logs("warn");
    let cfg = Config::load(args.config.as_deref())?;
    let gpu = node::open_gpu(&cfg)?;
    let mut pipeline = node::pipeline_config(&cfg, gpu)?;
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
            json,
        } => {
            let cfg = common.load()?;
            let ladder = ladder.unwrap_or_else(|| cfg.transcode.default_ladder.clone());
            cfg.ladders()?.check(&ladder)?;
            let ch = node::open_registry(&cfg)?.create_with(&name, &ladder, private)?;
            print_channels(&mut out, &cfg, &[ch], json, true)?;
        }
        ChannelCmd::Update {
            common,
            id,
            private,
            json,
        } => {
            let cfg = common.load()?;
            let reg = node::open_registry(&cfg)?;
            let ch = match private {
                Some(p) => reg.set_private(&id, p)?,
                None => reg.get(&id)?,
            };
            print_channels(&mut out, &cfg, &[ch], json, true)?;
        }
        ChannelCmd::List { common, json } => {
            let cfg = common.load()?;
            let chs = node::open_registry(&cfg)?.list()?;
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
        ChannelCmd::RotateKey { common, id, json } => {
            let cfg = common.load()?;
            let ch = node::open_registry(&cfg)?.rotate_key(&id)?;
            print_channels(&mut out, &cfg, &[ch], json, true)?;
        }
    }
    Ok(())
}

/// Calls the running node's metadata endpoint with the admin token from
/// the config or the data dir; the node's JSON answer, or its error.
fn post_metadata(
    cfg: &Config,
    admin_addr: Option<SocketAddr>,
    id: &str,
    (body, content_type): (Vec<u8>, &str),
    duration: Option<f64>,
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
    let mut url = format!("http://{addr}/api/v1/channels/{id}/metadata");
    if let Some(d) = duration {
        url.push_str(&format!("?duration={d}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
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

/// `single` prints one JSON object rather than an array.
fn print_channels(
    out: &mut impl Write,
    cfg: &Config,
    chs: &[Channel],
    json: bool,
    single: bool,
) -> Result<()> {
    let views: Vec<ChannelView> = chs.iter().map(|c| ChannelView::new(c, cfg)).collect();
    if json {
        match (single, views.as_slice()) {
            (true, [v]) => serde_json::to_writer(&mut *out, v)?,
            _ => serde_json::to_writer(&mut *out, &views)?,
        }
        writeln!(out)?;
        return Ok(());
    }
    for v in &views {
        let play = format!("{}/play/{}", cfg.http_base_url(), v.id);
        writeln!(
            out,
            "channel {name} (id {id}, ladder {ladder}{private})\n\
             \x20 RTMP server   {rtmp}\n\
             \x20 stream key    {key}\n\
             \x20 ffmpeg        ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
             -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -b:a 128k -f flv {rtmp}/{key}\n\
             \x20 OBS           Settings > Stream: Service \"Custom...\", Server {rtmp}, Stream Key {key};\n\
             \x20               Settings > Output (Advanced): Keyframe Interval 2 s\n\
             \x20 WHIP          {whip} (OBS 30+: Service \"WHIP\", Bearer Token = stream key)\n\
             \x20 go live       {base}/publish/{id} (from a browser camera, over WHIP)\n\
             \x20 watch         {play}\n\
             \x20 HLS           {hls}\n",
            name = v.name,
            id = v.id,
            ladder = v.ladder,
            private = if v.private {
                ", private: playback token required"
            } else {
                ""
            },
            rtmp = v.ingest.rtmp,
            whip = v.ingest.whip,
            base = cfg.http_base_url(),
            key = v.stream_key,
            hls = v.playback_url,
        )?;
    }
    if views.is_empty() {
        writeln!(
            out,
            "no channels; create one with `rungs channel create --name NAME`"
        )?;
    }
    Ok(())
}

/// Logs to stderr at `level` unless RUST_LOG says otherwise.
fn init_logs(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn serve(args: ServeArgs) -> Result<()> {
    init_logs("info");
    let mut cfg = args.common.load()?;
    if let Some(a) = args.rtmp_addr {
        cfg.rtmp_addr = a;
    }
    if let Some(a) = args.http_addr {
        cfg.http_addr = a;
    }
    if let Some(a) = args.admin_addr {
        cfg.admin_addr = a;
    }
    Ok(node::serve(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_the_documented_forms() {
        Cli::try_parse_from([
            "rungs",
            "serve",
            "--config",
            "x.toml",
            "--data-dir",
            "d",
            "--rtmp-addr",
            "127.0.0.1:1935",
            "--http-addr",
            "127.0.0.1:8080",
            "--admin-addr",
            "127.0.0.1:8081",
        ])
        .expect("serve");
        Cli::try_parse_from([
            "rungs",
            "channel",
            "create",
            "--data-dir",
            "d",
            "--name",
            "n",
            "--json",
        ])
        .expect("create");
        Cli::try_parse_from(["rungs", "channel", "list", "--data-dir", "d"]).expect("list");
        Cli::try_parse_from(["rungs", "channel", "delete", "--data-dir", "d", "abc"])
            .expect("delete");
        Cli::try_parse_from(["rungs", "channel", "rotate-key", "--data-dir", "d", "abc"])
            .expect("rotate");
        for args in [
            &["channel", "create", "--name", "n", "--private"][..],
            &["channel", "update", "abc", "--private", "true"],
            &["channel", "update", "abc", "--private", "false", "--json"],
            &["playback-key", "create", "--json"],
            &["playback-key", "import", "--public-key", "pub.pem"],
            &["playback-key", "list"],
            &["playback-key", "delete", "pk_1"],
            &["viewer", "revoke", "viewer-7"],
        ] {
            Cli::try_parse_from(std::iter::once("rungs").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        Cli::try_parse_from([
            "rungs",
            "transcode",
            "--input",
            "in.mp4",
            "--output",
            "out",
            "--ladder",
            "standard",
            "--json",
        ])
        .expect("transcode");
    }

    #[test]
    fn json_output_is_one_object() {
        let cfg = Config::default();
        let ch = Channel {
            id: "abc".into(),
            name: "n".into(),
            stream_key: "sk_x".into(),
            ladder: "standard".into(),
            created_at: 0,
            private: false,
        };
        let mut buf = Vec::new();
        print_channels(&mut buf, &cfg, &[ch], true, true).expect("print");
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(v["ingest"]["rtmp"], "rtmp://localhost:1935/live");
        assert_eq!(v["ingest"]["whip"], "http://localhost:8080/whip/abc");
        assert_eq!(
            v["playback_url"],
            "http://localhost:8080/hls/abc/master.m3u8"
        );
    }
}
