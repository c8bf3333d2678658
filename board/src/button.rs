//! The reset button: a sans-IO [`ButtonLogic`] that turns edges into
//! actions, the [`Button`] trait for edge sources (the GPIO reader, a fake),
//! and [`next_action`], the blocking loop that joins them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A change of the button's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The button went down.
    Pressed,
    /// The button came up.
    Released,
}

/// What a press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    /// Nothing (no press, a press still short, or a short press).
    None,
    /// A long press: erase config, keys and state ([`crate::factory_reset`]).
    FactoryReset,
}

/// Long-press detection, as routers do it: holding the button for
/// `long_press` asks for a factory reset once, at the moment the threshold
/// passes, while the button is still held (so the user sees the LED react
/// and can let go). A short press does nothing. A button already held when
/// the logic starts (no `Pressed` edge seen) does nothing either, so a stuck
/// button cannot wipe the box at every boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonLogic {
    long_press: Duration,
    pressed_at: Option<Instant>,
    fired: bool,
}

impl Default for ButtonLogic {
    fn default() -> Self {
        ButtonLogic::new(ButtonLogic::DEFAULT_LONG_PRESS)
    }
}

impl ButtonLogic {
    /// How long to hold the button for a factory reset by default.
    pub const DEFAULT_LONG_PRESS: Duration = Duration::from_secs(10);

    /// A logic that treats a press of `long_press` or longer as long.
    pub fn new(long_press: Duration) -> Self {
        ButtonLogic {
            long_press,
            pressed_at: None,
            fired: false,
        }
    }

    /// Whether the button is held, as far as the edges seen tell.
    pub fn is_pressed(&self) -> bool {
        self.pressed_at.is_some()
    }

    /// An edge arrived at `now`.
    pub fn handle_edge(&mut self, now: Instant, edge: Edge) -> ButtonAction {
        match edge {
            Edge::Pressed => {
                // A second Pressed without a Released (a lost edge) keeps the
                // earlier start: the button has been down since then.
                if self.pressed_at.is_none() {
                    self.pressed_at = Some(now);
                    self.fired = false;
                }
                self.poll(now)
            }
            Edge::Released => {
                // A release past the threshold that nobody polled for is
                // still a long press.
                let action = self.poll(now);
                self.pressed_at = None;
                self.fired = false;
                action
            }
        }
    }

    /// Time passed: a held button may have become a long press.
    pub fn poll(&mut self, now: Instant) -> ButtonAction {
        match self.pressed_at {
            Some(at) if !self.fired && now.saturating_duration_since(at) >= self.long_press => {
                self.fired = true;
                ButtonAction::FactoryReset
            }
            _ => ButtonAction::None,
        }
    }

    /// When a held button becomes a long press; `None` when nothing will
    /// happen without a new edge.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.pressed_at {
            Some(at) if !self.fired => Some(at + self.long_press),
            _ => None,
        }
    }
}

/// A source of button edges.
pub trait Button {
    /// Wait up to `timeout` for the next edge; `Ok(None)` when none came.
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<Edge>, ButtonError>;
}

/// Reading the button failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ButtonError {
    /// The GPIO line could not be requested or read.
    #[error(
        "GPIO line {line} on {chip}: {source} (check the chip and line number, \
         e.g. with `gpioinfo`, and that no other program or driver holds the line)"
    )]
    Gpio {
        /// The GPIO character device.
        chip: std::path::PathBuf,
        /// The line offset on that chip.
        line: u32,
        /// What the GPIO layer said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The edge source has no more edges (a fake at the end of its script).
    #[error("the button's edge source is closed")]
    Closed,
}

/// A scripted button for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeButton {
    /// What each wait returns, in order: `Some(edge)`, or `None` for a wait
    /// that times out. When the script runs out, waits fail with
    /// [`ButtonError::Closed`].
    pub script: VecDeque<Option<Edge>>,
    /// The timeouts the waits were called with.
    pub waits: Vec<Duration>,
}

impl FakeButton {
    /// A button that plays `script`.
    pub fn new(script: impl IntoIterator<Item = Option<Edge>>) -> Self {
        FakeButton {
            script: script.into_iter().collect(),
            waits: Vec::new(),
        }
    }
}

impl Button for FakeButton {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<Edge>, ButtonError> {
        self.waits.push(timeout);
        self.script.pop_front().ok_or(ButtonError::Closed)
    }
}

/// How long [`next_action`] waits for an edge while nothing is pending.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// Block until the button asks for something, and return it (never
/// [`ButtonAction::None`]). `now` is the clock (`Instant::now` in the
/// daemon). Run it on a thread of its own: it blocks in [`Button::wait_edge`].
pub fn next_action<B: Button + ?Sized>(
    button: &mut B,
    logic: &mut ButtonLogic,
    mut now: impl FnMut() -> Instant,
) -> Result<ButtonAction, ButtonError> {
    loop {
        let t = now();
        let action = logic.poll(t);
        if action != ButtonAction::None {
            return Ok(action);
        }
        let wait = logic
            .poll_timeout()
            .map_or(IDLE_WAIT, |at| at.saturating_duration_since(t));
        let edge = button.wait_edge(wait)?;
        let t = now();
        let action = match edge {
            Some(edge) => logic.handle_edge(t, edge),
            None => logic.poll(t),
        };
        if action != ButtonAction::None {
            return Ok(action);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_short_press_does_nothing() {
        let t0 = Instant::now();
        let mut b = ButtonLogic::default();
        assert_eq!(b.handle_edge(t0, Edge::Pressed), ButtonAction::None);
        assert!(b.is_pressed());
        assert_eq!(b.poll(t0 + 9 * S), ButtonAction::None);
        assert_eq!(
            b.handle_edge(t0 + 9 * S, Edge::Released),
            ButtonAction::None
        );
        assert!(!b.is_pressed());
        assert_eq!(b.poll(t0 + 100 * S), ButtonAction::None);
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn a_long_press_resets_once_while_still_held() {
        let t0 = Instant::now();
        let mut b = ButtonLogic::default();
        b.handle_edge(t0, Edge::Pressed);
        assert_eq!(b.poll_timeout(), Some(t0 + 10 * S));
        assert_eq!(
            b.poll(t0 + 10 * S - Duration::from_millis(1)),
            ButtonAction::None
        );
        assert_eq!(b.poll(t0 + 10 * S), ButtonAction::FactoryReset);
        assert_eq!(b.poll(t0 + 11 * S), ButtonAction::None, "fired twice");
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(
            b.handle_edge(t0 + 30 * S, Edge::Released),
            ButtonAction::None
        );
    }

    #[test]
    fn a_long_press_nobody_polled_for_fires_on_release() {
        let t0 = Instant::now();
        let mut b = ButtonLogic::new(5 * S);
        b.handle_edge(t0, Edge::Pressed);
        assert_eq!(
            b.handle_edge(t0 + 6 * S, Edge::Released),
            ButtonAction::FactoryReset
        );
    }

    #[test]
    fn each_long_press_resets_again() {
        let t0 = Instant::now();
        let mut b = ButtonLogic::new(5 * S);
        b.handle_edge(t0, Edge::Pressed);
        assert_eq!(b.poll(t0 + 5 * S), ButtonAction::FactoryReset);
        b.handle_edge(t0 + 6 * S, Edge::Released);
        b.handle_edge(t0 + 7 * S, Edge::Pressed);
        assert_eq!(
            b.poll(t0 + 11 * S),
            ButtonAction::None,
            "the second press counts from its own start"
        );
        assert_eq!(b.poll(t0 + 12 * S), ButtonAction::FactoryReset);
    }

    #[test]
    fn a_button_held_at_start_does_nothing() {
        let t0 = Instant::now();
        let mut b = ButtonLogic::new(5 * S);
        assert_eq!(b.poll(t0 + 60 * S), ButtonAction::None);
        assert_eq!(
            b.handle_edge(t0 + 61 * S, Edge::Released),
            ButtonAction::None
        );
    }

    #[test]
    fn a_repeated_pressed_edge_keeps_the_first_start() {
        let t0 = Instant::now();
        let mut b = ButtonLogic::new(5 * S);
        b.handle_edge(t0, Edge::Pressed);
        b.handle_edge(t0 + 3 * S, Edge::Pressed);
        assert_eq!(b.poll(t0 + 5 * S), ButtonAction::FactoryReset);
    }

    /// A clock that moves one second each time it is read.
    fn ticking(t0: Instant) -> impl FnMut() -> Instant {
        let mut t = t0;
        move || {
            t += S;
            t
        }
    }

    #[test]
    fn next_action_returns_a_factory_reset_while_the_button_is_held() {
        let t0 = Instant::now();
        let mut button = FakeButton::new([None, Some(Edge::Pressed)]);
        button.script.extend([None; 20]);
        let mut logic = ButtonLogic::default();
        let action = next_action(&mut button, &mut logic, ticking(t0)).unwrap();
        assert_eq!(action, ButtonAction::FactoryReset);
        assert!(logic.is_pressed(), "fired while the button is still held");
        assert_eq!(button.waits[0], IDLE_WAIT, "nothing pending: wait long");
        assert!(button.waits[2] < 10 * S, "held: wait until the threshold");
        assert!(button.script.len() > 10, "kept waiting after the threshold");
    }

    #[test]
    fn next_action_ignores_short_presses() {
        let t0 = Instant::now();
        let mut button = FakeButton::new([Some(Edge::Pressed), None, Some(Edge::Released), None]);
        let mut logic = ButtonLogic::default();
        let err = next_action(&mut button, &mut logic, ticking(t0)).unwrap_err();
        assert!(matches!(err, ButtonError::Closed), "{err}");
        assert!(!logic.is_pressed());
    }
}
