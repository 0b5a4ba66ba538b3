//! Which configuration a command runs with, `rungs config check`, and the
//! exit status that tells a bad configuration apart from other failures.

use anyhow::Result;
use rungs::config::{self, Config, ConfigError, Loaded};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// EX_CONFIG (sysexits.h): the configuration is wrong, and running again
/// will not help. The systemd unit's `RestartPreventExitStatus=78` stops
/// the restart loop on it.
pub(crate) const EX_CONFIG: u8 = 78;

/// The configuration for a command given `--config` (`flag`): the file
/// (`--config`, `RUNGS_CONFIG`, else /etc/rungs/rungs.toml when it exists)
/// under the process's `RUNGS_*` overrides; `--data-dir` over both.
pub(crate) fn load(flag: Option<&Path>, data_dir: Option<&Path>) -> Result<Loaded, ConfigError> {
    let path = config::config_path(
        flag,
        std::env::var_os("RUNGS_CONFIG"),
        Path::new(config::DEFAULT_PATH),
    );
    let mut loaded = Config::load_with_env(path.as_deref(), std::env::vars_os())?;
    if let Some(d) = data_dir {
        loaded.config.data_dir = d.to_path_buf();
    }
    Ok(loaded)
}

/// What `serve` checks as it starts that needs no network and changes
/// nothing on disk, beyond what loading checks: the TLS pair (read and
/// matched), the GeoIP database, the hooks.
pub(crate) fn start_checks(cfg: &Config) -> Result<()> {
    rungs::serve::tls::Tls::load(&cfg.tls)?;
    rungs::serve::geo::Locator::open(&cfg.access)?;
    rungs::hooks::Hooks::new(&cfg.hooks)?;
    Ok(())
}

/// `rungs config check`: validates as `serve` would and prints the
/// effective configuration, secrets hidden, headed by where it came from.
pub(crate) fn check(loaded: &Loaded, out: &mut impl Write) -> Result<()> {
    start_checks(&loaded.config)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    // A TOML comment: the output loads back as a config file.
    writeln!(out, "# {}", loaded.describe().replace('\n', " "))?;
    write!(out, "{}", loaded.config.to_toml()?)?;
    Ok(())
}

/// The exit status for a command that failed with `e`: [`EX_CONFIG`] when
/// the configuration (its file, a variable, or a file it names) is at
/// fault, 1 otherwise.
pub(crate) fn exit_code(e: &anyhow::Error) -> ExitCode {
    if misconfigured(e) {
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

fn misconfigured(e: &anyhow::Error) -> bool {
    use rungs::node::NodeError;
    use rungs::record::RecordError;
    e.chain().any(|c| {
        c.is::<ConfigError>()
            || c.is::<rungs::serve::tls::TlsError>()
            || c.is::<rungs::hooks::HookError>()
            // Not GpuRequired: a driver still loading at boot is fixed by
            // the restart.
            || matches!(
                c.downcast_ref::<NodeError>(),
                Some(
                    NodeError::Config(_)
                        | NodeError::Ladder(_)
                        | NodeError::Hooks(_)
                        | NodeError::Recording(RecordError::Config(_))
                )
            )
    })
}
