//! Arbitrary text as a config file: a clear error or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshbridge::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Keys that name files would make the fuzzer read arbitrary paths.
    if text.contains("wireguard_config") || text.contains("private_key_file") {
        return;
    }
    let _ = Config::from_toml(text, None);
});
