//! Link-time layout of the release binary: the functions a worker runs
//! (then the supervisor's) are placed together at the start of the text,
//! from `.cargo/text-order-<target>.txt` (written by `bench/text_order.py`
//! from a traced run; with BOTFLEET_LINK_MAP=FILE the linker also writes
//! its map there, which the script reads). A worker then maps ~0.6 MB of the binary's code instead of
//! ~1.9 MB: the kernel maps a binary's pages in 64 KiB (or larger) blocks
//! around each page it runs, and the hot code used to be spread over all
//! of them. It must never change what the program does: an unknown or
//! stale name in the list is ignored, and a linker that cannot order
//! symbols is not given the list.

use std::env;
use std::path::Path;
use std::process::Command;

fn rustc_minor() -> Option<u32> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BOTFLEET_LINK_MAP");
    let target = env::var("TARGET").unwrap_or_default();
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let list = Path::new(&dir)
        .join(".cargo")
        .join(format!("text-order-{target}.txt"));
    // The directory, not the file: a list added later is seen too, and a
    // target without a list is not rebuilt at every build.
    println!("cargo:rerun-if-changed=.cargo");
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    // The static musl build links with rust-lld directly (.cargo/config.toml);
    // glibc links through cc with rustc's own lld from 1.90 on (an older
    // rustc uses the system's ld, which has no such option).
    let prefix = match target.as_str() {
        "x86_64-unknown-linux-musl" => "",
        "x86_64-unknown-linux-gnu" if rustc_minor().is_some_and(|m| m >= 90) => "-Wl,",
        _ => return,
    };
    if let Ok(map) = env::var("BOTFLEET_LINK_MAP") {
        println!("cargo:rustc-link-arg-bins={prefix}--Map={map}");
    }
    if list.exists() {
        let list = list.display();
        println!("cargo:rustc-link-arg-bins={prefix}--symbol-ordering-file={list}");
        println!("cargo:rustc-link-arg-bins={prefix}--no-warn-symbol-ordering");
    }
}
