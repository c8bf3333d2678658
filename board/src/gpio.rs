//! The real reset button: a line of the GPIO character device
//! (`/dev/gpiochipN`), read with the `gpiocdev` crate (uAPI v2, Linux 5.10+).

use crate::{Button, ButtonError, Edge};
use gpiocdev::line::{Bias, EdgeDetection, EdgeKind};
use gpiocdev::Request;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the kernel waits for a contact to settle before it reports an
/// edge, so a bouncing contact does not end a long press early.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// A push button on a GPIO line, e.g. between a Pi's GPIO 17 (chip
/// `/dev/gpiochip0`, line 17; `gpioinfo` lists the lines) and ground.
///
/// The line is requested as an input with edge detection on both edges and
/// kernel debouncing. `active_low` means pressed pulls the line low (a
/// button to ground): the internal pull-up is then enabled, otherwise the
/// pull-down. Edges are reported by the kernel in logical terms, so
/// [`Edge::Pressed`] is always "went down", whatever the wiring.
///
/// On OpenWrt the board's own buttons are usually held by the `gpio-keys`
/// driver (and handled by `/etc/rc.button/`), so they cannot be requested
/// here; this reader is for a button wired to a free line.
#[derive(Debug)]
pub struct GpioButton {
    chip: PathBuf,
    line: u32,
    request: Request,
}

impl GpioButton {
    /// Request `line` of `chip` as a button input.
    pub fn open(chip: &Path, line: u32, active_low: bool) -> Result<Self, ButtonError> {
        let mut builder = Request::builder();
        builder
            .on_chip(chip)
            .with_consumer("meshbridge-reset")
            .with_line(line)
            .as_input()
            .with_bias(if active_low {
                Bias::PullUp
            } else {
                Bias::PullDown
            })
            .with_edge_detection(EdgeDetection::BothEdges)
            .with_debounce_period(DEBOUNCE);
        if active_low {
            builder.as_active_low();
        }
        let request = builder.request().map_err(|e| gpio_error(chip, line, e))?;
        Ok(GpioButton {
            chip: chip.to_owned(),
            line,
            request,
        })
    }

    /// Whether the button is held right now.
    pub fn is_pressed(&self) -> Result<bool, ButtonError> {
        let value = self
            .request
            .value(self.line)
            .map_err(|e| gpio_error(&self.chip, self.line, e))?;
        Ok(value == gpiocdev::line::Value::Active)
    }
}

fn gpio_error(chip: &Path, line: u32, e: gpiocdev::Error) -> ButtonError {
    ButtonError::Gpio {
        chip: chip.to_owned(),
        line,
        source: Box::new(e),
    }
}

impl Button for GpioButton {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<Edge>, ButtonError> {
        let err = |e| gpio_error(&self.chip, self.line, e);
        if !self.request.wait_edge_event(timeout).map_err(err)? {
            return Ok(None);
        }
        let event = self.request.read_edge_event().map_err(err)?;
        Ok(Some(match event.kind {
            EdgeKind::Rising => Edge::Pressed,
            EdgeKind::Falling => Edge::Released,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_missing_chip_names_the_chip_and_line() {
        let chip =
            std::env::temp_dir().join(format!("mb-board-no-gpiochip-{}", std::process::id()));
        let err = GpioButton::open(&chip, 17, true).unwrap_err();
        assert!(matches!(&err, ButtonError::Gpio { line: 17, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("no-gpiochip") && text.contains("line 17"),
            "{text}"
        );
    }
}
