"""Board support wired to the daemon, against a fake sysfs/devfs tree: the
status LED follows the daemon's state and the watchdog is fed, then disarmed
by a clean stop. Nothing here touches the machine's real LEDs or watchdog."""

import time

from site_ns import wait_for


def fake_pi(root):
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    led = root / "sys/class/leds/ACT"
    led.mkdir(parents=True)
    (led / "trigger").write_text("none [mmc0] timer heartbeat\n")
    (led / "brightness").write_text("0\n")
    (led / "max_brightness").write_text("255\n")
    # The kernel creates these when the timer trigger is chosen; sysfs files cannot be created by writing.
    (led / "delay_on").write_text("500\n")
    (led / "delay_off").write_text("500\n")
    (root / "dev").mkdir()
    (root / "dev/watchdog").write_bytes(b"")
    return led, root / "dev/watchdog"


def test_status_led_and_watchdog_follow_the_daemon(site):
    root = site.tmp / "pi"
    led, wd = fake_pi(root)
    site.add_device("dev")
    site.start_box(board=f'[board]\nroot = "{root}"\nwatchdog = true\n')
    log = site.box_log_text()
    assert "board: Raspberry Pi 4 Model B Rev 1.4" in log, log[-2000:]
    # No peer online yet: slow blink ("no mesh").
    wait_for(lambda: (led / "trigger").read_text().strip() == "timer" and
             (led / "delay_on").exists() and (led / "delay_on").read_text().strip() == "1000",
             timeout=10, what="the LED to show 'no mesh'")
    site.start_peer()
    site.ping_until(site.peer, "10.77.0.1")
    # A peer is online: solid on.
    wait_for(lambda: (led / "trigger").read_text().strip() == "none" and
             (led / "brightness").read_text().strip() == "255", timeout=10, what="the LED to show 'online'")
    # The watchdog is fed while the loop is healthy.
    wait_for(lambda: wd.stat().st_size >= 2, timeout=15, what="watchdog feeds")
    fed = wd.stat().st_size
    time.sleep(6)
    assert wd.stat().st_size > fed
    # A clean stop disarms it (magic close 'V') and gives the LED back its trigger.
    site.stop_box()
    assert wd.read_bytes().endswith(b"V")
    assert (led / "trigger").read_text().strip() == "mmc0"
