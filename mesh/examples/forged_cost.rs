//! What one forged handshake message costs the mesh (no sockets, no loop):
//! `cargo run -p meshbridge-mesh --example forged_cost`. Debug builds
//! optimize the crypto crates (see the workspace `Cargo.toml`), so the
//! figure is close to a release build's.

use meshbridge_mesh::{Mesh, PrivateKey};
use std::time::Instant;

fn main() {
    let mut mesh = Mesh::new(&PrivateKey::from_bytes([1; 32]));
    let src = "203.0.113.66:4444".parse().expect("address");
    let shaped = |kind: u8, len: usize| {
        let mut p = vec![kind, 0, 0, 0];
        p.extend((0..len - 4).map(|i| (i * 7 % 251) as u8));
        p
    };
    const N: u32 = 20_000;
    for (name, p) in [
        ("initiation, wrong MAC1", shaped(1, 148)),
        ("response, wrong MAC1", shaped(2, 92)),
    ] {
        let t = Instant::now();
        for _ in 0..N {
            let _ = mesh.handle_datagram(src, &p);
        }
        let us = t.elapsed().as_secs_f64() / f64::from(N) * 1e6;
        println!("{name}: {us:.2} us per datagram");
    }
    println!("{:?}", mesh.stats());
}
