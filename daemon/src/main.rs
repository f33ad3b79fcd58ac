//! dmvpnd: command line, logging and runtime around [`dmvpnd::control_plane::Daemon`].
//!
//! dmvpnd never forks (systemd `Type=simple`/`exec` supervises it). Logs go to stderr as plain
//! lines: under journald (`JOURNAL_STREAM` set) without timestamps, since the journal adds its
//! own; with `--foreground` or on a terminal with them.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use dmvpn_config::{Config, Role};
use tokio::signal::unix::{SignalKind, signal};

mod cli;
use cli::Args;

fn init_logging(foreground: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DMVPND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some() && !foreground;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    if journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn summary(c: &Config) -> String {
    let role = match c.nhrp.role {
        Role::Spoke { .. } => format!("spoke, {} NHS", c.nhrp.nhs.len()),
        Role::Hub { redirect } => format!("hub, redirect {}", if redirect { "on" } else { "off" }),
    };
    format!(
        "{role}; tunnel {} {} mtu {}",
        c.tunnel.interface, c.tunnel.address, c.tunnel.mtu
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        return match dmvpn_config::load(path) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("{}: warning: {w}", path.display());
                }
                eprintln!("{}: configuration OK ({})", path.display(), summary(&c));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(args.foreground);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    // Config errors are reported before any device or socket is touched.
    let config = dmvpn_config::load(&args.config)?;
    tracing::info!(config = %args.config.display(), "{}", summary(&config));
    for w in config.warnings() {
        tracing::warn!(config = %args.config.display(), "{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dmvpnd")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let daemon = dmvpnd::control_plane::Daemon::start(config, &args.config).await?;
        tracing::info!("running");
        daemon
            .run(async {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
            })
            .await;
        Ok(())
    })
}
