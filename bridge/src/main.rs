//! `meshbridge`: the daemon binary and its small commands.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use meshbridge::config::{Config, DEFAULT_STATE_DIR};
use meshbridge_mesh::PrivateKey;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Puts devices that cannot run a VPN client (printers, TVs, consoles) onto a WireGuard mesh.
#[derive(Parser, Debug)]
#[command(name = "meshbridge", version, about)]
struct Cli {
    /// Run the daemon in the foreground with this config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate this config file and exit (0 if valid).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "cleanup"])]
    check_config: Option<PathBuf>,
    /// Remove every link, address, route and rule meshbridge installed (uses --config's state_dir if given).
    #[arg(long)]
    cleanup: bool,
    /// Log filter: "info", "debug", or per module like "debug,boringtun=info" (RUST_LOG overrides).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a new private key (like `wg genkey`).
    Genkey,
    /// Read a private key on stdin, print its public key (like `wg pubkey`).
    Pubkey,
    /// Show the running box: peers, bridged devices, health (like `tailscale status`).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The daemon's config file (to find its socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The daemon's API socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
    },
}

fn init_logs(filter: &str) {
    use tracing_subscriber::filter::Targets;
    // "info", "debug", or per module: "debug,boringtun=info". RUST_LOG wins if set.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    let targets: Targets = spec.parse().unwrap_or_else(|e| {
        eprintln!("meshbridge: ignoring log filter {spec:?} ({e}); using \"info\"");
        Targets::new().with_default(tracing::Level::INFO)
    });
    use tracing_subscriber::prelude::*;
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(ansi),
        )
        .with(targets)
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Genkey) => {
            let mut out = std::io::stdout();
            writeln!(out, "{}", PrivateKey::generate().to_base64())?;
            return Ok(());
        }
        Some(Command::Pubkey) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading a private key from stdin")?;
            let key: PrivateKey = text
                .trim()
                .parse()
                .context("stdin does not hold a private key")?;
            println!("{}", key.public_key());
            return Ok(());
        }
        Some(Command::Status {
            json,
            config,
            socket,
        }) => {
            let path = match (socket, config.or(cli.config.clone())) {
                (Some(s), _) => s,
                (None, Some(c)) => {
                    Config::load(&c)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", c.display()))?
                        .api_socket
                }
                (None, None) => {
                    meshbridge::api::default_socket(std::path::Path::new(DEFAULT_STATE_DIR))
                }
            };
            let response = runtime()?.block_on(meshbridge::api::ask(
                &path,
                &meshbridge::api::Request::Status,
            ))?;
            match response {
                meshbridge::api::Response::Status(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s)?)
                }
                meshbridge::api::Response::Status(s) => print!("{}", meshbridge::api::render(&s)),
                meshbridge::api::Response::Error { error } => {
                    anyhow::bail!("the daemon says: {error}")
                }
            }
            return Ok(());
        }
        None => {}
    }
    if let Some(path) = cli.check_config {
        let c = Config::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        println!(
            "{}: OK (mesh {} port {}, {} peer(s), bridge {} with {} port(s), DHCP {}-{})",
            path.display(),
            c.mesh_address,
            c.listen_port,
            c.peers.len(),
            c.bridge_name,
            c.bridge_ports.len(),
            c.dhcp_range.0,
            c.dhcp_range.1
        );
        return Ok(());
    }
    if cli.cleanup {
        init_logs(&cli.log);
        let (state_dir, links, routing) = match &cli.config {
            Some(path) => {
                let c =
                    Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                (
                    c.state_dir,
                    vec![c.tap_name, c.tun_name],
                    c.routing.uplink.is_some(),
                )
            }
            None => (PathBuf::from(DEFAULT_STATE_DIR), Vec::new(), false),
        };
        runtime()?.block_on(meshbridge::daemon::cleanup(&state_dir, &links, routing))?;
        tracing::info!("cleanup done");
        return Ok(());
    }
    if let Some(path) = cli.config {
        init_logs(&cli.log);
        let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return runtime()?.block_on(meshbridge::daemon::run(config));
    }
    anyhow::bail!("nothing to do: use --config FILE to run (see --help)")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshbridge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
