//! The box's hardware, wired to the daemon: the status LED shows the
//! daemon's state, the hardware watchdog is fed only while the main loop
//! keeps reporting in, and a long press on the reset button asks for a
//! factory reset. The logic is in `meshbridge-board`; this is the shell.

use crate::config::Config;
use meshbridge_board::{
    detect, factory_reset, next_action, ButtonAction, ButtonLogic, DevWatchdog, GpioButton,
    LedState, Leds, Paths, Root, SysfsLed, Watchdog, WatchdogGate,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The watchdog feeder thread and its stop flag.
type Feeder = (std::thread::JoinHandle<()>, Arc<AtomicBool>);

/// The LED, the watchdog feeder and the button watcher.
pub struct Hardware {
    /// What the board is, for the System page ("Raspberry Pi 4 Model B", "generic Linux").
    pub board_name: String,
    led: Option<SysfsLed>,
    gate: Option<Arc<Mutex<WatchdogGate>>>,
    feeder: Option<Feeder>,
    reset: Option<mpsc::UnboundedReceiver<()>>,
}

impl Hardware {
    /// Detect the board and start what the config enables. Problems are
    /// logged; the box runs without the part that failed.
    pub fn start(config: &Config) -> Hardware {
        let root = Root::new(config.board.root.clone());
        let board = match detect(&root) {
            Ok(b) => {
                tracing::info!("board: {}", b.kind);
                Some(b)
            }
            Err(e) => {
                tracing::warn!("board detection: {e}");
                None
            }
        };
        let led_dir = match config.board.status_led.as_deref() {
            None => None,
            Some("auto") => board.as_ref().and_then(|b| b.status_led.clone()),
            Some(name) => Some(root.leds().join(name)),
        };
        let led = led_dir.and_then(|d| match SysfsLed::open(&d) {
            Ok(mut l) => {
                let _ = l.set(LedState::Starting);
                Some(l)
            }
            Err(e) => {
                tracing::warn!("status LED {}: {e}", d.display());
                None
            }
        });
        let (gate, feeder) = if config.board.watchdog {
            start_watchdog(board.as_ref().and_then(|b| b.watchdog.clone()))
        } else {
            (None, None)
        };
        let reset =
            config.board.reset_button.as_ref().map(|(chip, line)| {
                start_button(chip.clone(), *line, config.board.reset_active_low)
            });
        Hardware {
            board_name: board
                .as_ref()
                .map(|b| b.kind.to_string())
                .unwrap_or_else(|| "unknown".into()),
            led,
            gate,
            feeder,
            reset,
        }
    }

    /// The main loop is alive and the box is in `state`.
    pub fn report(&mut self, state: LedState) {
        if let Some(l) = self.led.as_mut() {
            if let Err(e) = l.set(state) {
                tracing::debug!("status LED: {e}");
            }
        }
        if let Some(g) = &self.gate {
            if let Ok(mut g) = g.lock() {
                g.mark_healthy(Instant::now());
            }
        }
    }

    /// Resolves when the reset button was held long enough (never without a button).
    pub async fn reset_requested(&mut self) {
        match self.reset.as_mut() {
            Some(rx) => {
                if rx.recv().await.is_none() {
                    self.reset = None;
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending().await,
        }
    }

    /// A clean stop: disarm the watchdog (magic close), give the LED back.
    pub fn stop(mut self) {
        if let Some((thread, stop)) = self.feeder.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        if let Some(mut l) = self.led.take() {
            let _ = l.release();
        }
    }
}

fn start_watchdog(path: Option<PathBuf>) -> (Option<Arc<Mutex<WatchdogGate>>>, Option<Feeder>) {
    let Some(path) = path else {
        tracing::warn!(
            "board.watchdog is on but this board has no watchdog device meshbridge may use"
        );
        return (None, None);
    };
    let mut wd = match DevWatchdog::open(&path) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("watchdog {}: {e}", path.display());
            return (None, None);
        }
    };
    tracing::info!(
        "feeding the hardware watchdog {} while the main loop is healthy",
        path.display()
    );
    let gate = Arc::new(Mutex::new(WatchdogGate::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (g, s) = (gate.clone(), stop.clone());
    // A thread of its own: feeding must not depend on the loop it guards
    // except through the gate's health mark.
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            let due = g
                .lock()
                .map(|mut g| g.poll_feed(Instant::now()))
                .unwrap_or(false);
            if due {
                if let Err(e) = wd.feed() {
                    tracing::warn!("feeding the watchdog: {e}");
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Err(e) = wd.stop() {
            tracing::warn!("disarming the watchdog: {e}");
        }
    });
    (Some(gate), Some((thread, stop)))
}

fn start_button(chip: PathBuf, line: u32, active_low: bool) -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut button = match GpioButton::open(&chip, line, active_low) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("reset button {}:{line}: {e}", chip.display());
                return;
            }
        };
        let mut logic = ButtonLogic::default();
        loop {
            match next_action(&mut button, &mut logic, Instant::now) {
                Ok(ButtonAction::FactoryReset) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("reset button: {e}");
                    return;
                }
            }
        }
    });
    rx
}

/// Wipe config, keys and state after a long press (the daemon has already
/// removed what it installed). Logs what was removed; false when the reset
/// was refused or failed.
pub fn do_factory_reset(config: &Config) -> bool {
    let config_dir = config
        .source
        .as_ref()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf());
    let paths = Paths {
        config_dir: config_dir.unwrap_or_else(|| PathBuf::from("/etc/meshbridge")),
        state_dir: config.state_dir.clone(),
        runtime_dir: PathBuf::from("/run/meshbridge"),
    };
    match factory_reset(&paths) {
        Ok(removed) => {
            tracing::warn!(
                "factory reset: removed {}",
                removed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            true
        }
        Err(e) => {
            tracing::error!("factory reset failed: {e}");
            false
        }
    }
}
