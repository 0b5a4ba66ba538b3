//! The composition root: a node's parts (registry, GPUs, hub, ingest
//! listeners, HTTP) wired from one [`Config`] and run until a signal.
//! `main.rs` is the command line around it and nothing else.

use crate::config::{Config, ConfigError};
use crate::fleet::Fleet;
use crate::gpu::GpuMode;
use crate::gpu::device::{Gpu, GpuError};
use crate::gpu::probe::GpuRequired;
use crate::hub::{Hub, HubConfig};
use crate::metrics::METRICS;
use crate::record::Recordings;
use crate::registry::{Registry, RegistryError};
use crate::serve::listener::Limits;
use crate::transcode::backend::{ChannelPlan, GpuPool, GpuRuntime, MachineFacts, StreamFacts};
use crate::transcode::frame::Size;
use crate::transcode::ladder::LadderError;
use crate::transcode::pipeline::{EncoderTuning, Pace, PipelineConfig};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod lifecycle;

/// How often the node looks for live channels deleted, or whose key was
/// rotated, by the CLI (which writes the database without telling the
/// node): a revoked publisher is cut within this.
const REGISTRY_CHECK: Duration = Duration::from_millis(500);

/// How often each GPU's memory in use is read.
const GPU_MEMORY_EVERY: Duration = Duration::from_secs(5);

/// Connections the admin listener takes at once: a scraper and a few
/// operators. Its own budget, so a flood on the player port never locks the
/// operator out of `/metrics`.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Open files a node needs beside its connections: the registry, WHIP's
/// socket, recordings, FFmpeg, logs.
const FILES_BESIDE_CONNECTIONS: usize = 256;

/// Why a node did not start (or stopped). Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ladder(#[from] LadderError),
    #[error(transparent)]
    GpuRequired(#[from] GpuRequired),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("channel registry: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Recording(#[from] crate::record::RecordError),
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    AdminToken(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The backend plan a new channel with a 1080p High-profile source and the
/// default ladder would get, with `machine` and no other load.
pub fn new_channel_plan(cfg: &Config, machine: &MachineFacts) -> Result<ChannelPlan, NodeError> {
    let rungs = cfg
        .ladders()?
        .plan(&cfg.transcode.default_ladder, Size::new(1920, 1080))?
        .len();
    let stream = StreamFacts {
        codec: crate::media::VideoCodec::Avc,
        profile_idc: 100,
        chroma_format_idc: Some(1),
        bit_depth: Some(8),
        width: 1920,
        height: 1080,
    };
    Ok(crate::transcode::backend::plan(
        cfg.gpu.enabled,
        machine,
        &[],
        &stream,
        rungs,
    ))
}

/// Every GPU `gpu.devices` allows, opened with every kernel compiled now, so
/// that a kernel that does not compile stops the start instead of failing a
/// stream later; channels then share them, each going to the least loaded.
/// `on` without a usable GPU stops the start, saying why; `auto` falls back
/// to the CPU backends with one log line.
pub fn open_gpu(cfg: &Config) -> Result<Option<Arc<GpuRuntime>>, NodeError> {
    let cpu = |why: String| -> Result<Option<Arc<GpuRuntime>>, NodeError> {
        let plan = new_channel_plan(cfg, &MachineFacts::cpu_only(why))?;
        tracing::info!(%plan, "backends of a new 1080p channel");
        Ok(None)
    };
    if cfg.gpu.enabled == GpuMode::Off {
        return cpu("gpu.enabled = \"off\"".into());
    }
    let required = cfg.gpu.enabled == GpuMode::On;
    let probe = crate::gpu::probe::probe(&cfg.gpu);
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
                tracing::info!(gpu = gpu.index, name = %gpu.name, "CUDA kernels ready");
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

/// The live pipeline settings from config; each channel sets its ladder
/// (and `rungs transcode` its pace).
pub fn pipeline_config(
    cfg: &Config,
    gpu: Option<Arc<GpuRuntime>>,
) -> Result<PipelineConfig, NodeError> {
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
        scaler: t.scaler,
        queue_frames: t.queue_frames,
        quality_every_gops: t.quality_every_gops,
        frame_rate: None,
        gpu,
        covered: Vec::new(),
    })
}

/// The channel registry `[registry]` names (by default SQLite in the data
/// dir, which is made if missing), for the CLI: it opens no stream session.
pub fn open_registry(cfg: &Config) -> Result<Registry, NodeError> {
    open_registry_as(cfg, "")
}

/// The registry for `node_id`, whose stream sessions it opens and closes.
fn open_registry_as(cfg: &Config, node_id: &str) -> Result<Registry, NodeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let file = |what| {
        move |source| NodeError::File {
            what,
            path: cfg.data_dir.clone(),
            source,
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .map_err(file("creating data dir"))?;
    // It holds stream keys and the admin token: the node's user alone,
    // however it was made before.
    std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(file("restricting data dir"))?;
    Ok(Registry::open_config(
        &cfg.registry,
        &cfg.data_dir,
        node_id,
    )?)
}

/// The configured token, or the one in the data dir, or a new one written
/// there (mode 0600) and printed this once.
fn admin_token(cfg: &Config) -> Result<String, NodeError> {
    if let Some(t) = &cfg.api.admin_token {
        if t.len() < 16 {
            return Err(NodeError::AdminToken(
                "api.admin_token must be at least 16 characters".into(),
            ));
        }
        return Ok(t.clone());
    }
    let path = cfg.data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {
            return Err(NodeError::AdminToken(format!(
                "{} is empty; delete it to get a new token",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(NodeError::File {
                what: "reading",
                path,
                source,
            });
        }
    }
    let token = crate::registry::random_key().replacen("sk_", "at_", 1);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{token}"));
    if let Err(source) = written {
        return Err(NodeError::File {
            what: "writing",
            path,
            source,
        });
    }
    // The token itself never goes to a terminal or a journal: only where
    // the node's user can read it.
    tracing::info!(path = %path.display(), "admin API token written (mode 0600)");
    Ok(token)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// Runs a node on `cfg` until SIGINT or SIGTERM.
pub fn serve(cfg: Config) -> Result<(), NodeError> {
    let gpu = open_gpu(&cfg)?;
    if let Some(runtime) = &gpu {
        watch_gpu_memory(runtime.clone());
    }
    let node_id = crate::fleet::node_id(&cfg.node.id);
    let registry = Arc::new(open_registry_as(&cfg, &node_id)?);
    let token: Arc<str> = admin_token(&cfg)?.into();
    let me = crate::registry::NodeInfo {
        id: node_id,
        public_url: cfg.http_base_url(),
        region: cfg.node.region.clone(),
        capacity: cfg.node.capacity,
        draining: false,
    };
    let fleet = Arc::new(Fleet::new(registry.clone(), me, cfg.lease()?));
    // In the live map before taking publishers: their claims need it.
    fleet.beat()?;
    let recordings = Recordings::open(&cfg.recording, &cfg.hls, &cfg.data_dir)?;
    let hub = Hub::new(
        registry.clone(),
        HubConfig {
            package: cfg.hls.clone(),
            reconnect_grace: cfg.reconnect_grace()?,
            ended_linger: cfg.ended_linger()?,
            queue_packets: cfg.ingest.queue_packets,
            limits: cfg.ingest.limits.hub(),
            transcode: pipeline_config(&cfg, gpu)?,
        },
        Some(recordings.clone()),
        Some(fleet.clone()),
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
        .build()
        .map_err(io("starting the async runtime"))?;
    rt.block_on(async move {
        let rtmp = tokio::net::TcpListener::bind(cfg.rtmp_addr)
            .await
            .map_err(io(format!("binding RTMP to {}", cfg.rtmp_addr)))?;
        let http = tokio::net::TcpListener::bind(cfg.http_addr)
            .await
            .map_err(io(format!("binding HTTP to {}", cfg.http_addr)))?;
        let admin = tokio::net::TcpListener::bind(cfg.admin_addr)
            .await
            .map_err(io(format!("binding the admin HTTP to {}", cfg.admin_addr)))?;
        let whip = crate::ingest::whip::Whip::start(
            cfg.whip.udp_addr,
            &cfg.whip.ips,
            crate::ingest::whip::WhipSettings {
                timing: crate::ingest::whip::SessionTiming {
                    segment_target: cfg.hls.segment_target,
                    part_target: cfg.hls.part_target,
                    idle: cfg.whip_session_timeout()?,
                },
                max_sessions: cfg.whip.max_sessions,
                audio_bps: u64::from(cfg.whip.audio_bitrate_kbps) * 1000,
            },
        )
        .await
        .map_err(io(format!("binding WHIP UDP to {}", cfg.whip.udp_addr)))?;
        let uploads = recordings.clone();
        tokio::spawn(watched(
            fleet.clone(),
            "recording upload",
            supervise("recording upload", move || {
                uploads.uploader(registry.clone())
            }),
        ));
        let beats = fleet.clone();
        let every = cfg.heartbeat()?;
        tokio::spawn(watched(
            fleet.clone(),
            "heartbeat",
            supervise("heartbeat", move || heartbeat(beats.clone(), every)),
        ));
        tracing::info!(rtmp = %cfg.rtmp_addr, http = %cfg.http_addr, admin = %cfg.admin_addr, whip_udp = %cfg.whip.udp_addr, data_dir = %cfg.data_dir.display(), "rungs listening");
        let hooks = crate::hooks::Hooks::with_registry(&cfg.hooks, hub.registry().clone())?;
        let rtmp = Arc::new(rtmp);
        let rtmp_limits = crate::ingest::rtmp::io::Limits::from_config(&cfg)?;
        let (rtmp_hub, rtmp_hooks) = (hub.clone(), hooks.clone());
        tokio::spawn(watched(
            fleet.clone(),
            "rtmp",
            supervise("rtmp", move || {
                crate::ingest::rtmp::serve(
                    rtmp.clone(),
                    rtmp_hub.clone(),
                    rtmp_limits,
                    rtmp_hooks.clone(),
                )
            }),
        ));
        let reaper = hub.clone();
        tokio::spawn(watched(fleet.clone(), "registry sync", supervise("registry sync", move || {
            let reaper = reaper.clone();
            async move {
                let mut every = tokio::time::interval(REGISTRY_CHECK);
                loop {
                    every.tick().await;
                    let hub = reaper.clone();
                    let synced = tokio::task::spawn_blocking(move || {
                        if let Some(fleet) = hub.fleet() {
                            fleet.release_gone(&hub.channel_ids());
                        }
                        hub.sync_registry()
                    });
                    if let Ok(Err(e)) = synced.await {
                        tracing::warn!(error = %e, "could not read the channel registry");
                    }
                }
            }
        })));
        let locator = crate::serve::geo::Locator::open(&cfg.access)?;
        let routers = crate::serve::routers(
            hub.clone(),
            cfg.clone(),
            token,
            whip,
            hooks,
            locator,
            fleet.clone(),
        );
        let limits = http_limits(&cfg)?;
        crate::package::PARKING.set_max(cfg.http.max_blocked_requests);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let (admin, http) = (Arc::new(admin), Arc::new(http));
        let admin_limits = Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..limits
        };
        let admin = {
            let stop_rx = stop_rx.clone();
            tokio::spawn(supervise("admin http", move || {
                crate::serve::listener::serve(
                    admin.clone(),
                    "admin",
                    routers.admin.clone(),
                    admin_limits,
                    stopped(stop_rx.clone()),
                )
            }))
        };
        // [tls]: HTTPS (and HTTP/2) on the player port, its certificate
        // reloaded on SIGHUP; the admin listener stays plain HTTP. SIGHUP is
        // caught without [tls] too: `systemctl reload` must not end the node.
        let tls = crate::serve::tls::Tls::load(&cfg.tls)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        tokio::spawn(crate::serve::tls::reload_on_sighup(tls.clone()));
        let player = tokio::spawn(supervise("player http", move || {
            crate::serve::listener::serve_tls(
                http.clone(),
                "player",
                routers.player.clone(),
                limits,
                tls.clone(),
                stopped(stop_rx.clone()),
            )
        }));
        lifecycle::notify(&[sd_notify::NotifyState::Ready]);
        tokio::spawn(lifecycle::watchdog(fleet.clone()));
        let stop = lifecycle::stop_requested(&fleet).await;
        lifecycle::drain(&hub, &fleet, stop, cfg.drain_deadline()?).await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = tokio::join!(player, admin);
        let f = fleet.clone();
        let _ = tokio::task::spawn_blocking(move || f.leave()).await;
        Ok(())
    })
}

/// Runs a node-wide task (a listener's accept loop, the registry sync),
/// starting it again when it panics: one bad moment in a loop every channel
/// relies on must not take the node's ports away. Ends when the task does.
async fn supervise<F>(name: &'static str, mut start: impl FnMut() -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(start()).await {
            Err(e) if e.is_panic() => {
                tracing::error!(task = name, "node-wide task panicked; starting it again");
                METRICS.task_restarts.with_label_values(&[name]).inc();
                // A task that panics at once must not spin.
                tokio::time::sleep(RESTART_PAUSE).await;
            }
            _ => return,
        }
    }
}

/// Runs a node-wide task, telling `/healthz` whether it runs: one that ended
/// (rather than panicked and restarted) leaves the node unhealthy.
async fn watched(fleet: Arc<Fleet>, name: &'static str, task: impl Future<Output = ()>) {
    fleet.task_running(name, true);
    task.await;
    fleet.task_running(name, false);
}

/// The pause before a panicked node-wide task starts again.
const RESTART_PAUSE: Duration = Duration::from_millis(200);

/// What each HTTP connection is allowed, from `[http]`; also raises the
/// process's open-file limit to what the connection cap needs.
fn http_limits(cfg: &Config) -> Result<Limits, NodeError> {
    let idle = cfg.idle_timeout()?;
    // A blocking reload waits up to three target durations without a byte.
    let longest_wait = Duration::from_secs(3 * u64::from(cfg.hls.sanitized().target_duration()));
    let limits = Limits {
        header_timeout: cfg.header_timeout()?,
        idle_timeout: idle,
        busy_timeout: idle.max(longest_wait + Duration::from_secs(1)),
        max_connections: cfg.http.max_connections,
    };
    let wanted = cfg.http.max_connections
        + ADMIN_MAX_CONNECTIONS
        + cfg.ingest.max_connections
        + FILES_BESIDE_CONNECTIONS;
    let got = raise_open_files(wanted as u64);
    if got < wanted as u64 {
        tracing::warn!(
            open_files = got,
            wanted,
            "the open-file limit is below what http.max_connections and ingest.max_connections need; \
             connections past it fail at accept (raise LimitNOFILE or ulimit -n)"
        );
    }
    Ok(limits)
}

/// Raises the soft `RLIMIT_NOFILE` towards `wanted` (never past the hard
/// limit) and returns the soft limit in force.
fn raise_open_files(wanted: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Refreshes each GPU's memory in use (`rungs_gpu_memory_used_bytes`, and
/// the free memory that places new channels) every few seconds.
fn watch_gpu_memory(runtime: Arc<GpuRuntime>) {
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

/// Renews the node's lease every `every`; a failure is logged once per
/// outage (the lease runs out if it lasts, and `/healthz` says so).
async fn heartbeat(fleet: Arc<Fleet>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let f = fleet.clone();
        match tokio::task::spawn_blocking(move || f.beat()).await {
            Ok(Ok(())) if failing => {
                tracing::info!("the registry answers heartbeats again");
                failing = false;
            }
            Ok(Err(e)) if !failing => {
                tracing::error!(error = %e, "heartbeat failed: the node leaves the live map when its lease runs out");
                failing = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_wide_task_that_panics_is_started_again() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let runs = Arc::new(AtomicU32::new(0));
        let restarts = || {
            METRICS
                .task_restarts
                .with_label_values(&["supervise-test"])
                .get()
        };
        rt.block_on(supervise("supervise-test", || {
            let runs = runs.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("the first run fails");
                }
            }
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 2, "started again once");
        assert_eq!(restarts(), 1);
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
}
