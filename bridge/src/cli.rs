//! The command line: options and subcommands, parsed with `lexopt`, with
//! the help text written out here (a derive-based parser cost about 0.1 MiB
//! of a box's binary). `--opt VALUE` and `--opt=VALUE` both work; a usage
//! error exits with status 2, as it did with clap.

use lexopt::{Arg, Parser, ValueExt};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub check_config: Option<PathBuf>,
    pub cleanup: bool,
    pub log: String,
    pub command: Option<Command>,
}

/// `--config FILE` or `--socket PATH` (to find the running daemon's socket).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Genkey,
    Pubkey,
    Status {
        json: bool,
        target: Target,
    },
    PeerAdd {
        name: String,
        route_all: bool,
        endpoint: Option<String>,
        no_qr: bool,
        target: Target,
    },
    PeerRemove {
        name: String,
        target: Target,
    },
    DeviceForget {
        mac: String,
        target: Target,
    },
    TailnetLogin {
        auth_key_file: Option<PathBuf>,
        target: Target,
    },
    TailnetLogout {
        target: Target,
    },
    FactoryReset {
        yes: bool,
        target: Target,
    },
    SetPassword {
        config: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    },
}

/// What the command line asks for besides running.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Cli),
    /// Print this (help or version) and exit 0.
    Print(String),
}

const TARGET_OPTS: &str =
    "      --config <FILE>         The daemon's config file (to find its socket)
      --socket <PATH>         The daemon's API socket
";

const MAIN_HELP: &str = "meshbridge daemon: puts devices that cannot run a VPN client onto a WireGuard mesh

Usage: meshbridge [OPTIONS] [COMMAND]

Commands:
  genkey         Print a new private key (like `wg genkey`)
  pubkey         Read a private key on stdin, print its public key (like `wg pubkey`)
  status         Show the running box: peers, bridged devices, health (like `tailscale status`)
  peer           Add or remove mesh peers on the running box
  device         The bridged devices of the running box
  tailnet        The box as a tailnet node (`[tailnet]`)
  factory-reset  Factory reset: erase config, keys and state of the running box and restart it unconfigured
  set-password   Set the web page's admin password (console recovery)
  help           Print this message or the help of the given subcommand(s)

Options:
      --config <FILE>         Run the daemon in the foreground with this config file
      --check-config <FILE>   Validate this config file and exit (0 if valid)
      --cleanup               Remove every link, address, route and rule meshbridge installed (uses --config's state_dir if given)
      --log <FILTER>          Log filter: \"info\", \"debug\", or per module like \"debug,boringtun=info\" (RUST_LOG overrides) [default: info]
  -h, --help                  Print help
  -V, --version               Print version
";

fn help(path: &[&str]) -> Option<String> {
    let (usage, about, args, opts): (&str, &str, &str, &str) = match path {
        [] => return Some(MAIN_HELP.to_string()),
        ["genkey"] => ("genkey", "Print a new private key (like `wg genkey`).", "", ""),
        ["pubkey"] => (
            "pubkey",
            "Read a private key on stdin, print its public key (like `wg pubkey`).",
            "",
            "",
        ),
        ["status"] => (
            "status [OPTIONS]",
            "Show the running box: peers, bridged devices, health (like `tailscale status`).",
            "",
            "      --json                  Print JSON instead of a table\n",
        ),
        ["peer"] => {
            return Some(
                "Add or remove mesh peers on the running box.

Usage: meshbridge peer <COMMAND>

Commands:
  add     Generate a key pair for a new peer, add it, print its config and QR code
  remove  Remove a peer
"
                .to_string(),
            )
        }
        ["peer", "add"] => (
            "peer add [OPTIONS] <NAME>",
            "Generate a key pair for a new peer, add it, print its config and QR code.",
            "  <NAME>  The peer's name (letters, digits, '-', '_', '.')\n",
            "      --route-all             The client sends all its internet traffic through the box (exit node)
      --endpoint <HOST:PORT>  host:port the client reaches the box at (default: mesh.endpoint or the uplink address)
      --no-qr                 Print only the config (no QR code)
",
        ),
        ["peer", "remove"] => (
            "peer remove [OPTIONS] <NAME>",
            "Remove a peer.",
            "  <NAME>  The peer's name\n",
            "",
        ),
        ["device"] => {
            return Some(
                "The bridged devices of the running box.

Usage: meshbridge device <COMMAND>

Commands:
  forget  Forget a device, as the page's Forget button
"
                .to_string(),
            )
        }
        ["device", "forget"] => (
            "device forget [OPTIONS] <MAC>",
            "Forget a device, as the page's Forget button: its lease, reservation and name; a device
that is a tailnet node of its own is logged out and removed from the tailnet.",
            "  <MAC>  The device's MAC (aa:bb:cc:dd:ee:ff)\n",
            "",
        ),
        ["tailnet"] => {
            return Some(
                "The box as a tailnet node (`[tailnet]`).

Usage: meshbridge tailnet <COMMAND>

Commands:
  login   Join the tailnet again without a restart
  logout  Log the box out of the tailnet
"
                .to_string(),
            )
        }
        ["tailnet", "login"] => (
            "tailnet login [OPTIONS]",
            "Join the tailnet again without a restart (after `tailnet logout`, or while the box waits
for a login): with the pre-auth key in --auth-key-file (sent to the daemon, kept in its
memory only), else as at start: the configured auth key, or an interactive login whose URL
this prints.",
            "",
            "      --auth-key-file <PATH>  A file holding the pre-auth key (\"-\": standard input)\n",
        ),
        ["tailnet", "logout"] => (
            "tailnet logout [OPTIONS]",
            "Log the box out of the tailnet: the control server expires its node, its tailnet peers
leave the mesh; `tailnet login` (or the next start) registers again.",
            "",
            "",
        ),
        ["factory-reset"] => (
            "factory-reset [OPTIONS]",
            "Factory reset: erase config, keys and state of the running box and restart it
unconfigured, to its first-start page (like a long press of the reset button; for boards
whose buttons belong to /etc/rc.button).",
            "",
            "      --yes                   Really erase everything\n",
        ),
        ["set-password"] => {
            return Some(
                "Set the web page's admin password (console recovery). Reads it from the terminal, or the
first line of stdin when that is not a terminal.

Usage: meshbridge set-password [OPTIONS]

Options:
      --config <FILE>         The daemon's config file (to find its state folder)
      --state-dir <DIR>       The state folder (default /var/lib/meshbridge)
  -h, --help                  Print help
"
                .to_string(),
            )
        }
        _ => return None,
    };
    let mut s = format!("{about}\n\nUsage: meshbridge {usage}\n\n");
    if !args.is_empty() {
        s.push_str("Arguments:\n");
        s.push_str(args);
        s.push('\n');
    }
    s.push_str("Options:\n");
    s.push_str(opts);
    if usage.contains("[OPTIONS]") && !matches!(path, ["genkey"] | ["pubkey"]) {
        s.push_str(TARGET_OPTS);
    }
    s.push_str("  -h, --help                  Print help\n");
    Some(s)
}

/// A usage error: the message, and the command whose help to point at.
#[derive(Debug, PartialEq, Eq)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\nFor more information, try '--help'.", self.0)
    }
}

impl From<lexopt::Error> for Usage {
    fn from(e: lexopt::Error) -> Self {
        Usage(e.to_string())
    }
}

fn set<T>(slot: &mut Option<T>, name: &str, v: T) -> Result<(), Usage> {
    if slot.is_some() {
        return Err(Usage(format!(
            "the argument '--{name}' cannot be used multiple times"
        )));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(slot: &mut bool, name: &str) -> Result<(), Usage> {
    if *slot {
        return Err(Usage(format!(
            "the argument '--{name}' cannot be used multiple times"
        )));
    }
    *slot = true;
    Ok(())
}

fn path(p: &mut Parser) -> Result<PathBuf, Usage> {
    Ok(PathBuf::from(p.value()?))
}

fn text(p: &mut Parser) -> Result<String, Usage> {
    Ok(p.value()?.string()?)
}

fn unexpected(arg: Arg) -> Usage {
    Usage(match arg {
        Arg::Value(v) => format!("unexpected argument '{}' found", v.to_string_lossy()),
        other => format!("unexpected argument '{}' found", describe(&other)),
    })
}

fn describe(arg: &Arg) -> String {
    match arg {
        Arg::Short(c) => format!("-{c}"),
        Arg::Long(l) => format!("--{l}"),
        Arg::Value(v) => v.to_string_lossy().into_owned(),
    }
}

fn conflict(a: &str, b: &str) -> Usage {
    Usage(format!("the argument '--{a}' cannot be used with '--{b}'"))
}

/// Parses one subcommand's options: `--config`, `--socket` and the
/// command's own (`own` returns false for an option it does not know),
/// plus up to one positional argument if `positional` names it.
fn sub(
    p: &mut Parser,
    cmd: &[&str],
    positional: Option<&str>,
    mut own: impl FnMut(&mut Parser, &str) -> Result<bool, Usage>,
) -> Result<Result<(Target, Option<String>), String>, Usage> {
    let (mut t, mut pos) = (Target::default(), None);
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Err(help(cmd).unwrap_or_default())),
            Arg::Long("config") => set(&mut t.config, "config", path(p)?)?,
            Arg::Long("socket") => set(&mut t.socket, "socket", path(p)?)?,
            Arg::Long(name) => {
                let name = name.to_string();
                if !own(p, &name)? {
                    return Err(Usage(format!("unexpected argument '--{name}' found")));
                }
            }
            Arg::Value(v) if positional.is_some() && pos.is_none() => pos = Some(v.string()?),
            other => return Err(unexpected(other)),
        }
    }
    if t.config.is_some() && t.socket.is_some() {
        return Err(conflict("socket", "config"));
    }
    if let (Some(name), None) = (positional, &pos) {
        return Err(Usage(format!(
            "the following required arguments were not provided:\n  <{name}>"
        )));
    }
    Ok(Ok((t, pos)))
}

/// Parses the arguments after the program's name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, Usage> {
    let mut p = Parser::from_args(args);
    let mut cli = Cli::default();
    let mut log = None;
    let mut command = None;
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Parsed::Print(MAIN_HELP.into())),
            Arg::Short('V') | Arg::Long("version") => {
                return Ok(Parsed::Print(format!(
                    "meshbridge {}\n",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            Arg::Long("config") => set(&mut cli.config, "config", path(&mut p)?)?,
            Arg::Long("check-config") => set(&mut cli.check_config, "check-config", path(&mut p)?)?,
            Arg::Long("cleanup") => flag(&mut cli.cleanup, "cleanup")?,
            Arg::Long("log") => set(&mut log, "log", text(&mut p)?)?,
            Arg::Value(v) => {
                command = Some(v.string()?);
                break;
            }
            other => return Err(unexpected(other)),
        }
    }
    cli.log = log.unwrap_or_else(|| "info".into());
    if cli.check_config.is_some() {
        if cli.config.is_some() {
            return Err(conflict("check-config", "config"));
        }
        if cli.cleanup {
            return Err(conflict("check-config", "cleanup"));
        }
    }
    let Some(command) = command else {
        return Ok(Parsed::Run(cli));
    };
    cli.command = Some(match parse_command(&mut p, &command)? {
        Ok(c) => c,
        Err(text) => return Ok(Parsed::Print(text)),
    });
    Ok(Parsed::Run(cli))
}

/// A subcommand, or the help text it asked for.
fn parse_command(p: &mut Parser, command: &str) -> Result<Result<Command, String>, Usage> {
    Ok(Ok(match command {
        "genkey" | "pubkey" => match p.next()? {
            None if command == "genkey" => Command::Genkey,
            None => Command::Pubkey,
            Some(Arg::Short('h') | Arg::Long("help")) => {
                return Ok(Err(help(&[command]).unwrap_or_default()))
            }
            Some(other) => return Err(unexpected(other)),
        },
        "status" => {
            let mut json = false;
            let (target, _) = match sub(p, &["status"], None, |_, n| match n {
                "json" => flag(&mut json, "json").map(|()| true),
                _ => Ok(false),
            })? {
                Ok(x) => x,
                Err(h) => return Ok(Err(h)),
            };
            Command::Status { json, target }
        }
        "peer" | "device" | "tailnet" => {
            let action = match p.next()? {
                Some(Arg::Value(v)) => v.string()?,
                Some(Arg::Short('h') | Arg::Long("help")) => {
                    return Ok(Err(help(&[command]).unwrap_or_default()))
                }
                None => {
                    return Err(Usage(format!(
                        "'meshbridge {command}' requires a subcommand but one was not provided"
                    )))
                }
                Some(other) => return Err(unexpected(other)),
            };
            if action == "help" {
                return Ok(Err(help(&[command]).unwrap_or_default()));
            }
            let cmd = [command, action.as_str()];
            if help(&cmd).is_none() {
                return Err(Usage(format!("unrecognized subcommand '{action}'")));
            }
            match cmd {
                ["peer", "add"] => {
                    let (mut route_all, mut endpoint, mut no_qr) = (false, None, false);
                    let (target, name) = match sub(p, &cmd, Some("NAME"), |p, n| match n {
                        "route-all" => flag(&mut route_all, n).map(|()| true),
                        "no-qr" => flag(&mut no_qr, n).map(|()| true),
                        "endpoint" => set(&mut endpoint, n, text(p)?).map(|()| true),
                        _ => Ok(false),
                    })? {
                        Ok(x) => x,
                        Err(h) => return Ok(Err(h)),
                    };
                    Command::PeerAdd {
                        name: name.unwrap_or_default(),
                        route_all,
                        endpoint,
                        no_qr,
                        target,
                    }
                }
                ["peer", "remove"] => match sub(p, &cmd, Some("NAME"), |_, _| Ok(false))? {
                    Ok((target, name)) => Command::PeerRemove {
                        name: name.unwrap_or_default(),
                        target,
                    },
                    Err(h) => return Ok(Err(h)),
                },
                ["device", "forget"] => match sub(p, &cmd, Some("MAC"), |_, _| Ok(false))? {
                    Ok((target, mac)) => Command::DeviceForget {
                        mac: mac.unwrap_or_default(),
                        target,
                    },
                    Err(h) => return Ok(Err(h)),
                },
                ["tailnet", "login"] => {
                    let mut auth_key_file = None;
                    match sub(p, &cmd, None, |p, n| match n {
                        "auth-key-file" => set(&mut auth_key_file, n, path(p)?).map(|()| true),
                        _ => Ok(false),
                    })? {
                        Ok((target, _)) => Command::TailnetLogin {
                            auth_key_file,
                            target,
                        },
                        Err(h) => return Ok(Err(h)),
                    }
                }
                _ => match sub(p, &cmd, None, |_, _| Ok(false))? {
                    Ok((target, _)) => Command::TailnetLogout { target },
                    Err(h) => return Ok(Err(h)),
                },
            }
        }
        "factory-reset" => {
            let mut yes = false;
            match sub(p, &["factory-reset"], None, |_, n| match n {
                "yes" => flag(&mut yes, n).map(|()| true),
                _ => Ok(false),
            })? {
                Ok((target, _)) => Command::FactoryReset { yes, target },
                Err(h) => return Ok(Err(h)),
            }
        }
        "set-password" => {
            let (mut config, mut state_dir) = (None, None);
            while let Some(arg) = p.next()? {
                match arg {
                    Arg::Short('h') | Arg::Long("help") => {
                        return Ok(Err(help(&["set-password"]).unwrap_or_default()))
                    }
                    Arg::Long("config") => set(&mut config, "config", path(p)?)?,
                    Arg::Long("state-dir") => set(&mut state_dir, "state-dir", path(p)?)?,
                    other => return Err(unexpected(other)),
                }
            }
            if config.is_some() && state_dir.is_some() {
                return Err(conflict("state-dir", "config"));
            }
            Command::SetPassword { config, state_dir }
        }
        "help" => {
            let mut words = Vec::new();
            while let Some(arg) = p.next()? {
                words.push(describe(&arg));
            }
            let refs: Vec<&str> = words.iter().map(String::as_str).collect();
            return match help(&refs) {
                Some(h) => Ok(Err(h)),
                None => Err(Usage(format!(
                    "unrecognized subcommand '{}'",
                    words.join(" ")
                ))),
            };
        }
        other => return Err(Usage(format!("unrecognized subcommand '{other}'"))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, Usage> {
        parse(args.iter().map(OsString::from))
    }

    fn cli(args: &[&str]) -> Cli {
        match run(args) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn options_and_subcommands_parse_as_documented() {
        let c = cli(&["--config", "/etc/mb.toml", "--log=debug"]);
        assert_eq!(c.config, Some("/etc/mb.toml".into()));
        assert_eq!((c.log.as_str(), c.command), ("debug", None));
        assert_eq!(cli(&[]).log, "info");
        assert!(cli(&["--cleanup"]).cleanup);
        assert_eq!(cli(&["--check-config", "x"]).check_config, Some("x".into()));
        assert_eq!(
            cli(&[
                "peer",
                "add",
                "laptop",
                "--route-all",
                "--endpoint",
                "box:51820",
                "--socket=/s"
            ])
            .command,
            Some(Command::PeerAdd {
                name: "laptop".into(),
                route_all: true,
                endpoint: Some("box:51820".into()),
                no_qr: false,
                target: Target {
                    config: None,
                    socket: Some("/s".into())
                },
            })
        );
        assert_eq!(
            cli(&["--config", "c", "status", "--json"]).command,
            Some(Command::Status {
                json: true,
                target: Target::default()
            })
        );
        assert_eq!(
            cli(&["tailnet", "login", "--auth-key-file", "-"]).command,
            Some(Command::TailnetLogin {
                auth_key_file: Some("-".into()),
                target: Target::default()
            })
        );
        assert_eq!(
            cli(&["device", "forget", "aa:bb:cc:dd:ee:ff", "--config", "c"]).command,
            Some(Command::DeviceForget {
                mac: "aa:bb:cc:dd:ee:ff".into(),
                target: Target {
                    config: Some("c".into()),
                    socket: None
                }
            })
        );
        assert_eq!(
            cli(&["set-password", "--state-dir", "/tmp/s"]).command,
            Some(Command::SetPassword {
                config: None,
                state_dir: Some("/tmp/s".into())
            })
        );
        assert_eq!(
            cli(&["factory-reset"]).command,
            Some(Command::FactoryReset {
                yes: false,
                target: Target::default()
            })
        );
        assert_eq!(cli(&["genkey"]).command, Some(Command::Genkey));
    }

    #[test]
    fn help_and_version_print_and_mistakes_are_usage_errors() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["help"],
            &["help", "peer", "add"],
            &["peer", "add", "--help"],
            &["tailnet", "--help"],
            &["status", "-h"],
            &["genkey", "--help"],
            &["set-password", "--help"],
        ] {
            assert!(
                matches!(run(args), Ok(Parsed::Print(h)) if h.contains("Usage: meshbridge")),
                "{args:?}"
            );
        }
        assert_eq!(
            run(&["--version"]),
            Ok(Parsed::Print(format!(
                "meshbridge {}\n",
                env!("CARGO_PKG_VERSION")
            )))
        );
        for args in [
            &["--bogus"][..],
            &["--config"],
            &["--config", "a", "--config", "b"],
            &["--config", "a", "--check-config", "b"],
            &["--cleanup", "--check-config", "b"],
            &["status", "--config", "a", "--socket", "b"],
            &["peer", "add"],
            &["peer", "add", "a", "b"],
            &["peer", "frobnicate"],
            &["tailnet"],
            &["frobnicate"],
            &["genkey", "extra"],
            &["factory-reset", "--yes", "--yes"],
            &["set-password", "--config", "a", "--state-dir", "b"],
            &["help", "nothing"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
    }
}
