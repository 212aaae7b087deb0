//! Embeds every `stdlib/*.rlo` file as module `std::<stem>` (so adding a stdlib file needs no Rust).

use std::fmt::Write;
use std::path::Path;

fn main() {
    // The manifest dir of *this* build (cargo sets it when running the script), not the one
    // compiled into the script: cargo reuses a build-script binary across checkouts that share
    // a target dir, and `env!` would then embed another checkout's (possibly deleted) stdlib.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&manifest).join("../stdlib");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<(String, String)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) == Some("rlo") {
                println!("cargo:rerun-if-changed={}", p.display());
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    entries.push((stem.to_string(), p.display().to_string()));
                }
            }
        }
    }
    entries.sort();
    let mut out = String::from("/// `(module name, source)` of every stdlib file, sorted by name.\npub static STDLIB: &[(&str, &str)] = &[\n");
    for (stem, path) in &entries {
        let _ = writeln!(out, "    ({stem:?}, include_str!({path:?})),");
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let _ = std::fs::write(Path::new(&out_dir).join("stdlib.rs"), out);
}
