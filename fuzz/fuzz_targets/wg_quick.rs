//! Arbitrary text as a wg-quick file: an error with a line number, or a config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge_mesh::wgquick;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = wgquick::parse(text) {
        assert!(e.line >= 1 && e.line <= text.lines().count().max(1));
    }
});
