//! The daemon's modules depend on each other in one direction only:
//! config ← host effects ← status/health/API ← discovery ← control ← daemon.
//! This test reads every `crate::<module>` path in `bridge/src` and fails on
//! an edge that points up (or sideways into a higher layer), which is what
//! an import cycle needs.

use std::collections::BTreeSet;
use std::path::Path;

/// Layer of each top-level module of the daemon crate. A module may use
/// modules of a lower layer only.
const LAYERS: &[(&str, u8)] = &[
    ("persist", 0),
    ("lease_store", 1),
    ("mdns_link", 0),
    ("tailnet_dns", 0),
    ("tailnet_rules", 0),
    ("config", 1),
    ("dns", 1),
    ("tailnet_derp", 1),
    ("host", 2),
    ("config_edit", 2),
    ("hw", 2),
    ("peers", 2),
    ("faults", 2),
    ("tailnet", 2),
    ("wifi_conf", 2),
    ("wifi", 3),
    ("device_nodes", 3),
    ("health", 3),
    ("api", 4),
    ("discovery_remote", 4),
    ("discovery", 5),
    ("control", 6),
    ("daemon", 7),
    // The binary's command line (main.rs), above everything.
    ("cli", 8),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The module a source file belongs to: `host/nft.rs` → `host`,
/// `discovery_off.rs` → `discovery`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    let stem = first.trim_end_matches(".rs");
    match stem {
        "discovery_off" => "discovery".into(),
        s => s.into(),
    }
}

/// Every `crate::name` mentioned in `text` (comments included: a doc link
/// up the layers is a smell too).
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        if i > 0 {
            let b = text.as_bytes()[i - 1];
            if b.is_ascii_alphanumeric() || b == b'_' {
                continue; // e.g. `some_crate::`
            }
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The edges of `module` (whose source is `text`) that break the layering.
fn violations(module: &str, text: &str) -> Vec<String> {
    let Some(own) = layer(module) else {
        return vec![format!("module {module} has no layer: add it to LAYERS")];
    };
    uses(text)
        .into_iter()
        .filter(|dep| dep != module)
        .filter_map(|dep| match layer(&dep) {
            Some(l) if l < own => None,
            Some(_) => Some(format!(
                "{module} (layer {own}) uses {dep}, which is not below it"
            )),
            None => Some(format!("{module} uses {dep}, which has no layer")),
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn daemon_modules_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel == Path::new("main.rs") || rel == Path::new("lib.rs") {
            continue; // the binary and the crate root sit on top
        }
        let module = module_of(rel);
        seen.insert(module.clone());
        let text = std::fs::read_to_string(&f).unwrap();
        for v in violations(&module, &text) {
            bad.push(format!("{}: {v}", rel.display()));
        }
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
    assert!(seen.contains("daemon") && seen.contains("host") && seen.contains("config"));
}

#[test]
fn the_check_catches_an_upward_edge() {
    assert!(violations("config", "use crate::persist::write_atomic;").is_empty());
    assert_eq!(
        violations("host", "let x = crate::control::handle(r, c);").len(),
        1
    );
    assert_eq!(violations("api", "use crate::control::endpoint;").len(), 1);
    assert_eq!(
        violations("config", "crate::api::default_socket(&d)").len(),
        1
    );
    // Same layer is not allowed either (that is how two modules end up in a cycle).
    assert_eq!(
        violations("host", "crate::config_edit::commit(p, t)").len(),
        1
    );
    assert!(violations("api", "meshbridge_crate::daemon::x").is_empty());
    assert_eq!(violations("newthing", "").len(), 1);
}
