//! `meshbridge`: the daemon binary and its small commands.

use anyhow::{Context, Result};
use meshbridge::config::{Config, DEFAULT_STATE_DIR};
use meshbridge_mesh::PrivateKey;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;
use cli::{Cli, Command, Parsed, Target};

/// The tailnet section of the running box's status.
fn tailnet_status(path: &std::path::Path) -> Result<meshbridge::api::TailnetStatus> {
    let v = ask(path, meshbridge::api::Request::Status)?;
    let s: meshbridge::api::Status =
        serde_json::from_value(v).context("reading the daemon's status")?;
    s.tailnet
        .context("the box is not in a tailnet (no [tailnet] section in its config)")
}

fn socket_path(target: Target, fallback: &Option<PathBuf>) -> Result<PathBuf> {
    Ok(match (target.socket, target.config.or(fallback.clone())) {
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
        Some(Command::Status { json, target }) => {
            let path = socket_path(target, &cli.config)?;
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
        Some(Command::PeerAdd {
            name,
            route_all,
            endpoint,
            no_qr,
            target,
        }) => {
            let path = socket_path(target, &cli.config)?;
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
            return Ok(());
        }
        Some(Command::PeerRemove { name, target }) => {
            let path = socket_path(target, &cli.config)?;
            ask(
                &path,
                meshbridge::api::Request::PeerRemove { name: name.clone() },
            )?;
            println!("peer {name} removed");
            return Ok(());
        }
        Some(Command::DeviceForget { mac, target }) => {
            let path = socket_path(target, &cli.config)?;
            ask(
                &path,
                meshbridge::api::Request::DeviceForget { mac: mac.clone() },
            )?;
            println!("device {mac} forgotten");
            return Ok(());
        }
        Some(Command::TailnetLogout { target }) => {
            let path = socket_path(target, &cli.config)?;
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
        Some(Command::TailnetLogin {
            auth_key_file,
            target,
        }) => {
            let path = socket_path(target, &cli.config)?;
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
        Some(Command::FactoryReset { yes, target }) => {
            anyhow::ensure!(
                yes,
                "this erases the box's config, keys, peers, leases and password: run again with --yes"
            );
            let path = socket_path(target, &cli.config)?;
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
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshbridge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
