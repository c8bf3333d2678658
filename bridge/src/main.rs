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
    /// Add or remove mesh peers on the running box.
    Peer {
        #[command(subcommand)]
        action: PeerAction,
    },
    /// The bridged devices of the running box.
    Device {
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// The box as a tailnet node (`[tailnet]`).
    Tailnet {
        #[command(subcommand)]
        action: TailnetAction,
    },
    /// Factory reset: erase config, keys and state of the running box and
    /// restart it unconfigured, to its first-start page (like a long press of
    /// the reset button; for boards whose buttons belong to /etc/rc.button).
    FactoryReset {
        /// Really erase everything.
        #[arg(long)]
        yes: bool,
        /// The daemon's config file (to find its socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The daemon's API socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
    },
    /// Set the web page's admin password (console recovery). Reads it from the
    /// terminal, or the first line of stdin when that is not a terminal.
    SetPassword {
        /// The daemon's config file (to find its state folder).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The state folder (default /var/lib/meshbridge).
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum PeerAction {
    /// Generate a key pair for a new peer, add it, print its config and QR code.
    Add {
        /// The peer's name (letters, digits, '-', '_', '.').
        name: String,
        /// The client sends all its internet traffic through the box (exit node).
        #[arg(long)]
        route_all: bool,
        /// host:port the client reaches the box at (default: mesh.endpoint or the uplink address).
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Option<String>,
        /// Print only the config (no QR code).
        #[arg(long)]
        no_qr: bool,
        /// The daemon's config file (to find its socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The daemon's API socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
    },
    /// Remove a peer.
    Remove {
        /// The peer's name.
        name: String,
        /// The daemon's config file (to find its socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The daemon's API socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceAction {
    /// Forget a device, as the page's Forget button: its lease, reservation
    /// and name; a device that is a tailnet node of its own is logged out
    /// and removed from the tailnet.
    Forget {
        /// The device's MAC (aa:bb:cc:dd:ee:ff).
        mac: String,
        /// The daemon's config file (to find its socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The daemon's API socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TailnetAction {
    /// Join the tailnet again without a restart (after `tailnet logout`, or
    /// while the box waits for a login): with the pre-auth key in
    /// --auth-key-file (sent to the daemon, kept in its memory only), else
    /// as at start: the configured auth key, or an interactive login whose
    /// URL this prints.
    Login {
        /// A file holding the pre-auth key ("-": standard input).
        #[arg(long, value_name = "PATH")]
        auth_key_file: Option<PathBuf>,
        /// The daemon's config file (to find its socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The daemon's API socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
    },
    /// Log the box out of the tailnet: the control server expires its node,
    /// its tailnet peers leave the mesh; `tailnet login` (or the next start)
    /// registers again.
    Logout {
        /// The daemon's config file (to find its socket).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The daemon's API socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
    },
}

/// The tailnet section of the running box's status.
fn tailnet_status(path: &std::path::Path) -> Result<meshbridge::api::TailnetStatus> {
    let v = ask(path, meshbridge::api::Request::Status)?;
    let s: meshbridge::api::Status =
        serde_json::from_value(v).context("reading the daemon's status")?;
    s.tailnet
        .context("the box is not in a tailnet (no [tailnet] section in its config)")
}

fn socket_path(socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf> {
    Ok(match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => {
            Config::load(&c)
                .map_err(|e| anyhow::anyhow!("{}: {e}", c.display()))?
                .api_socket
        }
        (None, None) => meshbridge::api::default_socket(std::path::Path::new(DEFAULT_STATE_DIR)),
    })
}

fn ask(path: &std::path::Path, request: meshbridge::api::Request) -> Result<serde_json::Value> {
    runtime()?
        .block_on(meshbridge::api::ask(path, &request))?
        .map_err(|f| match f.field {
            Some(field) => anyhow::anyhow!("{field}: {}", f.error),
            None => anyhow::anyhow!("{}", f.error),
        })
}

fn read_password() -> Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let a = rpassword::prompt_password("New admin password: ")?;
        let b = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(a == b, "the two passwords differ");
        Ok(a)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
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
                .with_writer(meshbridge_web::logbuf::Tee)
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
            let path = socket_path(socket, config.or(cli.config.clone()))?;
            let v = ask(&path, meshbridge::api::Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let s: meshbridge::api::Status =
                    serde_json::from_value(v).context("reading the daemon's status")?;
                print!("{}", meshbridge::api::render(&s));
            }
            return Ok(());
        }
        Some(Command::Peer { action }) => {
            match action {
                PeerAction::Add {
                    name,
                    route_all,
                    endpoint,
                    no_qr,
                    config,
                    socket,
                } => {
                    let path = socket_path(socket, config.or(cli.config.clone()))?;
                    let v = ask(
                        &path,
                        meshbridge::api::Request::PeerAdd {
                            name,
                            route_all,
                            endpoint,
                        },
                    )?;
                    let added: meshbridge_web::proto::PeerAdded =
                        serde_json::from_value(v).context("reading the daemon's answer")?;
                    if !no_qr {
                        if let Some(qr) = meshbridge_web::peerconf::qr_terminal(&added.config) {
                            println!("{qr}");
                        }
                    }
                    println!(
                        "# {} — the private key is shown only now; it is not kept on the box.",
                        added.filename
                    );
                    print!("{}", added.config);
                }
                PeerAction::Remove {
                    name,
                    config,
                    socket,
                } => {
                    let path = socket_path(socket, config.or(cli.config.clone()))?;
                    ask(
                        &path,
                        meshbridge::api::Request::PeerRemove { name: name.clone() },
                    )?;
                    println!("peer {name} removed");
                }
            }
            return Ok(());
        }
        Some(Command::Device {
            action:
                DeviceAction::Forget {
                    mac,
                    config,
                    socket,
                },
        }) => {
            let path = socket_path(socket, config.or(cli.config.clone()))?;
            ask(
                &path,
                meshbridge::api::Request::DeviceForget { mac: mac.clone() },
            )?;
            println!("device {mac} forgotten");
            return Ok(());
        }
        Some(Command::Tailnet {
            action: TailnetAction::Logout { config, socket },
        }) => {
            let path = socket_path(socket, config.or(cli.config.clone()))?;
            ask(&path, meshbridge::api::Request::TailnetLogout)?;
            // The control task logs out in the background: wait for it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let t = tailnet_status(&path)?;
                if t.state == meshbridge::api::TailnetState::LoggedOut {
                    match &t.error {
                        Some(e) => println!("logged out of the tailnet on this box ({e})"),
                        None => println!("logged out of {}", t.control_url),
                    }
                    println!("`meshbridge tailnet login` (or the next start of meshbridge) registers again");
                    return Ok(());
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "the logout did not finish within 20 s (state: {})",
                    t.state.words()
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        Some(Command::Tailnet {
            action:
                TailnetAction::Login {
                    auth_key_file,
                    config,
                    socket,
                },
        }) => {
            let path = socket_path(socket, config.or(cli.config.clone()))?;
            let auth_key = match auth_key_file {
                Some(f) => {
                    let text = if f.as_os_str() == "-" {
                        let mut t = String::new();
                        std::io::Read::read_to_string(
                            &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
                            &mut t,
                        )
                        .context("reading the auth key from standard input")?;
                        t
                    } else {
                        meshbridge::config::paths::read_limited(&f)
                            .with_context(|| format!("reading the auth key from {}", f.display()))?
                    };
                    let k = meshbridge::api::check_auth_key(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                    Some(meshbridge::api::SecretText(k.to_string()))
                }
                None => None,
            };
            ask(&path, meshbridge::api::Request::TailnetLogin { auth_key })?;
            // The control task registers in the background: wait for it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let t = tailnet_status(&path)?;
                match t.state {
                    meshbridge::api::TailnetState::LoggedIn => {
                        println!("logged in to {}", t.control_url);
                        return Ok(());
                    }
                    meshbridge::api::TailnetState::NeedsLogin => {
                        if let Some(u) = &t.login_url {
                            println!(
                                "to log in, visit {u}\n(`meshbridge status` says when it is done)"
                            );
                            return Ok(());
                        }
                    }
                    meshbridge::api::TailnetState::Error => {
                        anyhow::bail!(
                            "joining the tailnet failed: {} (the box keeps trying)",
                            t.error.as_deref().unwrap_or("no reason given")
                        );
                    }
                    _ => {}
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "not logged in after 30 s (state: {}); `meshbridge status` shows how it goes",
                    t.state.words()
                );
            }
        }
        Some(Command::FactoryReset {
            yes,
            config,
            socket,
        }) => {
            anyhow::ensure!(
                yes,
                "this erases the box's config, keys, peers, leases and password: run again with --yes"
            );
            let path = socket_path(socket, config.or(cli.config.clone()))?;
            ask(&path, meshbridge::api::Request::FactoryReset)?;
            println!("factory reset: meshbridge restarts unconfigured (first-start page, setup code in its state folder)");
            return Ok(());
        }
        Some(Command::SetPassword { config, state_dir }) => {
            let dir = match (state_dir, config.or(cli.config.clone())) {
                (Some(d), _) => d,
                (None, Some(c)) => {
                    Config::load(&c)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", c.display()))?
                        .state_dir
                }
                (None, None) => PathBuf::from(DEFAULT_STATE_DIR),
            };
            let pw = read_password()?;
            meshbridge_web::auth::check_new_password(&pw)
                .map_err(|e| anyhow::anyhow!("password: {e}"))?;
            meshbridge_web::auth::set_password_file(&dir, &pw)
                .with_context(|| format!("writing the password to {}", dir.display()))?;
            println!("admin password set; web sessions are logged out");
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
        if let Some(t) = &c.tailnet {
            println!(
                "tailnet: control {}, {}, bridge route {}, accept routes {}",
                t.control_url,
                match &t.auth_key {
                    Some(meshbridge::config::AuthKey::File(p)) =>
                        format!("auth key from {}", p.display()),
                    Some(meshbridge::config::AuthKey::Inline(_)) => "auth key inline".to_string(),
                    None => "interactive login".to_string(),
                },
                if t.advertise_bridge {
                    "advertised"
                } else {
                    "not advertised"
                },
                if t.accept_routes { "on" } else { "off" },
            );
            if let Some(f) = &t.ca_file {
                println!("tailnet: control server CA file {}", f.display());
            }
        }
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
        let state_dir = config.state_dir.clone();
        let restart = match runtime()?.block_on(meshbridge::daemon::run(config)) {
            Err(e) if e.is::<meshbridge::daemon::StartFailed>() => {
                // A setting that keeps the daemon from starting never strands
                // the box: go back to the last config that started.
                let why = e
                    .chain()
                    .skip(1)
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": ");
                tracing::error!("{e:#}");
                match meshbridge::faults::roll_back(&path, &state_dir, &why)? {
                    Some(good) => runtime()?.block_on(meshbridge::daemon::run(good))?,
                    None => return Err(e),
                }
            }
            r => r?,
        };
        if restart {
            // Start again from the config file, as the same process (systemd and
            // procd keep tracking it).
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
            let err = std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .exec();
            return Err(err).context("restarting meshbridge");
        }
        return Ok(());
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
