//! The last log lines, kept in memory for the System page: a tracing writer
//! that writes to stderr and keeps a copy (ANSI colours removed).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

/// How many lines are kept.
pub const KEEP: usize = 500;

static LINES: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Keep a copy of `text` (one or more lines).
pub fn record(text: &str) {
    let Ok(mut lines) = LINES.lock() else {
        return;
    };
    for l in strip_ansi(text).lines() {
        if l.trim().is_empty() {
            continue;
        }
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(l.to_string());
    }
}

/// The last `n` lines (oldest first) that contain `filter` (case-insensitive).
pub fn lines(n: usize, filter: Option<&str>) -> Vec<String> {
    let Ok(lines) = LINES.lock() else {
        return Vec::new();
    };
    let f = filter.map(str::to_lowercase).filter(|f| !f.is_empty());
    let matching: Vec<&String> = lines
        .iter()
        .filter(|l| f.as_ref().is_none_or(|f| l.to_lowercase().contains(f)))
        .collect();
    let skip = matching.len().saturating_sub(n);
    matching.into_iter().skip(skip).cloned().collect()
}

/// A writer for `tracing_subscriber::fmt`: stderr plus the in-memory copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee;

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        record(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = Tee;
    fn make_writer(&'a self) -> Tee {
        Tee
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_without_colours_and_filters() {
        for i in 0..(KEEP + 20) {
            record(&format!(
                "\u{1b}[32m INFO\u{1b}[0m line {i} {}\n",
                if i % 2 == 0 { "dhcp" } else { "mesh" }
            ));
        }
        let all = lines(KEEP, None);
        assert_eq!(all.len(), KEEP);
        assert!(all
            .last()
            .unwrap()
            .ends_with(&format!("line {} mesh", KEEP + 19)));
        assert!(!all[0].contains('\u{1b}'));
        let dhcp = lines(3, Some("DHCP"));
        assert_eq!(dhcp.len(), 3);
        assert!(dhcp.iter().all(|l| l.contains("dhcp")));
    }
}
