//! The `rungs` command line: serve | channel.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rungs::config::Config;
use rungs::hub::{Hub, HubConfig};
use rungs::metrics::METRICS;
use rungs::registry::{Channel, Registry};
use rungs::serve::api::ChannelView;
use rungs::transcode::pipeline::{EncoderTuning, Pace, PipelineConfig};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the node looks for live channels deleted by the CLI (which
/// writes the database without telling the node).
const DELETED_CHANNEL_CHECK: Duration = Duration::from_secs(2);

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
    /// HTTP listen address (default 0.0.0.0:8080).
    #[arg(long)]
    http_addr: Option<SocketAddr>,
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
        /// Print one JSON object instead of text.
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
    /// Give a channel a new stream key; the old one stops working.
    RotateKey {
        #[command(flatten)]
        common: Common,
        id: String,
        #[arg(long)]
        json: bool,
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
        Cmd::Transcode(args) => transcode(args),
        Cmd::Probe(args) => probe(args),
    }
}

fn probe(args: ProbeArgs) -> Result<()> {
    let cfg = Config::load(args.config.as_deref())?;
    let found = rungs::gpu::probe::probe(&cfg.gpu);
    let machine = rungs::transcode::backend::MachineFacts::from_probe(&found, found.nvrtc.usable);
    let plan = new_channel_plan(&cfg, &machine)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&found)?;
        v["new_channel"] = serde_json::Value::String(plan.to_string());
        serde_json::to_writer(&mut out, &v)?;
    } else {
        write!(out, "{found}\nnew 1080p channel: {plan}")?;
    }
    writeln!(out)?;
    Ok(())
}

/// The backend plan a new channel with a 1080p High-profile source and the
/// default ladder would get, with `machine` and no other load.
fn new_channel_plan(
    cfg: &Config,
    machine: &rungs::transcode::backend::MachineFacts,
) -> Result<rungs::transcode::backend::ChannelPlan> {
    use rungs::transcode::backend::{StreamFacts, plan};
    use rungs::transcode::frame::Size;
    let rungs = cfg
        .ladders()?
        .plan(&cfg.transcode.default_ladder, Size::new(1920, 1080))?
        .len();
    let stream = StreamFacts {
        profile_idc: 100,
        chroma_format_idc: Some(1),
        bit_depth: Some(8),
        width: 1920,
        height: 1080,
    };
    Ok(plan(cfg.gpu.enabled, machine, &[], &stream, rungs))
}

/// Every GPU `gpu.devices` allows, opened with every kernel compiled now, so
/// that a kernel that does not compile stops the start instead of failing a
/// stream later; channels then share them, each going to the least loaded.
/// `on` without a usable GPU stops the start, saying why; `auto` falls back
/// to the CPU backends with one log line.
fn open_gpu(cfg: &Config) -> Result<Option<Arc<rungs::transcode::backend::GpuRuntime>>> {
    use rungs::gpu::GpuMode;
    use rungs::gpu::device::{Gpu, GpuError};
    use rungs::transcode::backend::{GpuPool, GpuRuntime, MachineFacts};
    let cpu = |why: String| -> Result<Option<Arc<GpuRuntime>>> {
        let plan = new_channel_plan(cfg, &MachineFacts::cpu_only(why))?;
        tracing::info!(%plan, "backends of a new 1080p channel");
        Ok(None)
    };
    if cfg.gpu.enabled == GpuMode::Off {
        return cpu("gpu.enabled = \"off\"".into());
    }
    let required = cfg.gpu.enabled == GpuMode::On;
    let probe = rungs::gpu::probe::probe(&cfg.gpu);
    if let Err(why) = probe.require() {
        if required {
            return Err(why.into());
        }
        tracing::info!(reason = why.missing(), "CPU backends");
        return cpu(why.missing().to_string());
    }
    match Gpu::open_all(&cfg.gpu) {
        Ok(gpus) => {
            for gpu in &gpus {
                tracing::info!(gpu = gpu.index, name = %gpu.name, "CUDA kernels compiled");
            }
            let machine = MachineFacts::from_probe(&probe, true);
            let plan = new_channel_plan(cfg, &machine)?;
            tracing::info!(%plan, "backends of a new 1080p channel");
            let runtime = GpuRuntime::new(GpuPool::new(cfg.gpu.enabled, machine), gpus);
            for gpu in runtime.gpus() {
                if let Ok(bytes) = gpu.memory_used() {
                    runtime.pool.set_memory_used(gpu.index, bytes);
                }
            }
            Ok(Some(runtime))
        }
        Err(e @ GpuError::Kernel(_)) => Err(e.into()),
        Err(e) if required => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "GPU not usable; CPU backends");
            Ok(None)
        }
    }
}

fn transcode(args: TranscodeArgs) -> Result<()> {
    // Warnings only: a stage that falls back to the CPU says so.
    init_logs("warn");
    let cfg = Config::load(args.config.as_deref())?;
    let gpu = open_gpu(&cfg)?;
    let mut pipeline = pipeline_config(&cfg, gpu)?;
    if let Some(l) = args.ladder {
        pipeline.ladders.check(&l)?;
        pipeline.ladder = l;
    }
    let report = rungs::hub::offline::run(rungs::hub::offline::Options {
        input: &args.input,
        output: &args.output,
        pipeline,
        package: cfg.hls.clone(),
        progress: !args.json && std::io::stderr().is_terminal(),
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

fn open_registry(cfg: &Config) -> Result<Registry> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    Ok(Registry::open(&cfg.data_dir)?)
}

fn channel(cmd: ChannelCmd) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ChannelCmd::Create {
            common,
            name,
            ladder,
            json,
        } => {
            let cfg = common.load()?;
            let ladder = ladder.unwrap_or_else(|| cfg.transcode.default_ladder.clone());
            cfg.ladders()?.check(&ladder)?;
            let ch = open_registry(&cfg)?.create(&name, &ladder)?;
            print_channels(&mut out, &cfg, &[ch], json, true)?;
        }
        ChannelCmd::List { common, json } => {
            let cfg = common.load()?;
            let chs = open_registry(&cfg)?.list()?;
            print_channels(&mut out, &cfg, &chs, json, false)?;
        }
        ChannelCmd::Delete { common, id } => {
            let cfg = common.load()?;
            open_registry(&cfg)?.delete(&id)?;
            writeln!(out, "deleted channel {id}")?;
        }
        ChannelCmd::RotateKey { common, id, json } => {
            let cfg = common.load()?;
            let ch = open_registry(&cfg)?.rotate_key(&id)?;
            print_channels(&mut out, &cfg, &[ch], json, true)?;
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
            "channel {name} (id {id}, ladder {ladder})\n\
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

/// The configured token, or the one in the data dir, or a new one written
/// there (mode 0600) and printed this once.
fn admin_token(cfg: &Config) -> Result<String> {
    if let Some(t) = &cfg.api.admin_token {
        if t.len() < 16 {
            bail!("api.admin_token must be at least 16 characters");
        }
        return Ok(t.clone());
    }
    let path = cfg.data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => bail!("{} is empty; delete it to get a new token", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = rungs::registry::random_key().replacen("sk_", "at_", 1);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{token}")?;
    eprintln!(
        "admin API token (saved to {}, shown only now): {token}",
        path.display()
    );
    Ok(token)
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
    let gpu = open_gpu(&cfg)?;
    if let Some(runtime) = &gpu {
        watch_gpu_memory(runtime.clone());
    }
    if let Some(a) = args.rtmp_addr {
        cfg.rtmp_addr = a;
    }
    if let Some(a) = args.http_addr {
        cfg.http_addr = a;
    }
    let registry = Arc::new(open_registry(&cfg)?);
    let token: Arc<str> = admin_token(&cfg)?.into();
    let hub = Hub::new(
        registry,
        HubConfig {
            package: cfg.hls.clone(),
            reconnect_grace: cfg.reconnect_grace()?,
            ended_linger: cfg.ended_linger()?,
            queue_packets: cfg.ingest.queue_packets,
            transcode: pipeline_config(&cfg, gpu)?,
        },
    );
    METRICS.start_time.set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    );
    let cfg = Arc::new(cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rungs-io")
        .build()?;
    rt.block_on(async move {
        let rtmp = tokio::net::TcpListener::bind(cfg.rtmp_addr)
            .await
            .with_context(|| format!("binding RTMP to {}", cfg.rtmp_addr))?;
        let http = tokio::net::TcpListener::bind(cfg.http_addr)
            .await
            .with_context(|| format!("binding HTTP to {}", cfg.http_addr))?;
        let whip = rungs::ingest::whip::Whip::start(
            cfg.whip.udp_addr,
            &cfg.whip.ips,
            rungs::ingest::whip::WhipSettings {
                timing: rungs::ingest::whip::SessionTiming {
                    segment_target: cfg.hls.segment_target,
                    part_target: cfg.hls.part_target,
                    idle: cfg.whip_session_timeout()?,
                },
                max_sessions: cfg.whip.max_sessions,
                audio_bps: u64::from(cfg.whip.audio_bitrate_kbps) * 1000,
            },
        )
        .await
        .with_context(|| format!("binding WHIP UDP to {}", cfg.whip.udp_addr))?;
        tracing::info!(rtmp = %cfg.rtmp_addr, http = %cfg.http_addr, whip_udp = %cfg.whip.udp_addr, data_dir = %cfg.data_dir.display(), "rungs listening");
        tokio::spawn(rungs::ingest::rtmp::serve(
            rtmp,
            hub.clone(),
            cfg.ingest.max_connections,
        ));
        let reaper = hub.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(DELETED_CHANNEL_CHECK);
            loop {
                every.tick().await;
                let hub = reaper.clone();
                let _ = tokio::task::spawn_blocking(move || hub.end_deleted()).await;
            }
        });
        let app = rungs::serve::router(hub, cfg.clone(), token, whip);
        axum::serve(http, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("HTTP server")?;
        tracing::info!("shutting down");
        Ok(())
    })
}

/// Refreshes each GPU's memory in use (`rungs_gpu_memory_used_bytes`, and
/// the free memory that places new channels) every few seconds.
fn watch_gpu_memory(runtime: Arc<rungs::transcode::backend::GpuRuntime>) {
    let spawned = std::thread::Builder::new()
        .name("gpu-memory".into())
        .spawn(move || {
            loop {
                for gpu in runtime.gpus() {
                    if let Ok(bytes) = gpu.memory_used() {
                        runtime.pool.set_memory_used(gpu.index, bytes);
                    }
                }
                std::thread::sleep(GPU_MEMORY_EVERY);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "GPU memory is not watched");
    }
}

const GPU_MEMORY_EVERY: Duration = Duration::from_secs(5);

/// The live pipeline settings from config; each channel sets its ladder.
fn pipeline_config(
    cfg: &Config,
    gpu: Option<Arc<rungs::transcode::backend::GpuRuntime>>,
) -> Result<PipelineConfig> {
    let t = &cfg.transcode;
    Ok(PipelineConfig {
        ladder: t.default_ladder.clone(),
        ladders: Arc::new(cfg.ladders()?),
        pace: Pace::Live,
        encoder: EncoderTuning {
            preset: t.preset.clone(),
            low_latency: t.low_latency,
            threads: t.encoder_threads,
        },
        decoder_threads: t.decoder_threads,
        queue_frames: t.queue_frames,
        quality_every_gops: t.quality_every_gops,
        frame_rate: None,
        gpu,
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
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
    fn admin_token_is_generated_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let t1 = admin_token(&cfg).expect("token");
        let t2 = admin_token(&cfg).expect("token");
        assert_eq!(t1, t2);
        let mode = std::fs::metadata(dir.path().join("admin-token"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
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
