//! The board layer wired the way the daemon wires it, on a fake Raspberry Pi
//! tree: detect, LED from health, watchdog gated on the main loop, long
//! press → factory reset. Only public API; nothing touches real hardware.

use meshbridge_board::{
    detect, factory_reset, next_action, BoardKind, ButtonAction, ButtonLogic, DevWatchdog, Edge,
    FakeButton, LedState, Leds, Root, SysfsLed, Watchdog, WatchdogGate,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Tree(PathBuf);

impl Tree {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("mb-board-wiring-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Tree(dir)
    }
    fn file(&self, abs: &str, contents: &str) -> PathBuf {
        let p = self.0.join(abs.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn a_pi_starts_goes_online_stalls_and_is_factory_reset_by_a_long_press() {
    let t = Tree::new();
    t.file(
        "/proc/device-tree/model",
        "Raspberry Pi 4 Model B Rev 1.4\0",
    );
    for (attr, value) in [
        ("trigger", "none [mmc0] timer heartbeat"),
        ("brightness", "0"),
        ("max_brightness", "255"),
        ("delay_on", "500"),
        ("delay_off", "500"),
    ] {
        t.file(&format!("/sys/class/leds/ACT/{attr}"), value);
    }
    let dev = t.file("/dev/watchdog", "");
    t.file("/etc/meshbridge/meshbridge.toml", "[mesh]\n");
    t.file("/etc/meshbridge/private.key", "secret\n");
    t.file("/var/lib/meshbridge/leases.json", "{}");

    // Start: detect, LED "starting".
    let board = detect(&Root::new(&t.0)).unwrap();
    assert!(matches!(board.kind, BoardKind::RaspberryPi { .. }));
    let led_dir = board.status_led.clone().unwrap();
    let mut led = SysfsLed::open(&led_dir).unwrap();
    led.set(LedState::Starting).unwrap();
    assert_eq!(read(&led_dir.join("delay_on")), "100");

    // Running: the loop marks health, a feeder feeds through the gate.
    let t0 = Instant::now();
    let sec = Duration::from_secs(1);
    let mut gate = WatchdogGate::new(5 * sec, 30 * sec);
    let mut wd = DevWatchdog::open(board.watchdog.as_deref().unwrap()).unwrap();
    for s in 0..20 {
        let now = t0 + s * sec;
        gate.mark_healthy(now);
        led.set(if s < 10 {
            LedState::NoMesh
        } else {
            LedState::Online
        })
        .unwrap();
        if gate.poll_feed(now) {
            wd.feed().unwrap();
        }
    }
    assert_eq!(read(&led_dir.join("trigger")), "none");
    assert_eq!(read(&led_dir.join("brightness")), "255");
    assert_eq!(fs::read(&dev).unwrap().len(), 4, "fed at 0, 5, 10, 15 s");

    // The main loop hangs after its mark at 19 s: the feeder goes on until
    // the mark is 30 s old, then stops, and the hardware reboots the box.
    let fed_before = fs::read(&dev).unwrap().len();
    for s in 20..120 {
        if gate.poll_feed(t0 + s * sec) {
            wd.feed().unwrap();
        }
    }
    assert_eq!(
        fs::read(&dev).unwrap().len() - fed_before,
        6,
        "fed at 20, 25, ..., 45 s, then never"
    );

    // A long press on the reset button.
    let mut button = FakeButton::new([Some(Edge::Pressed)]);
    button.script.extend([None; 15]);
    let mut clock = t0;
    let action = next_action(&mut button, &mut ButtonLogic::default(), || {
        clock += sec;
        clock
    })
    .unwrap();
    assert_eq!(action, ButtonAction::FactoryReset);
    let removed = factory_reset(&board.paths).unwrap();
    let line = format!(
        "factory reset: removed {}",
        removed
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        line.contains("private.key") && line.contains("leases.json"),
        "{line}"
    );
    assert!(!board.paths.config_file().exists());

    // Clean shutdown: magic close, LED back to the system.
    wd.stop().unwrap();
    assert!(read(&dev).ends_with('V'));
    led.release().unwrap();
    assert_eq!(read(&led_dir.join("trigger")), "mmc0");
}
