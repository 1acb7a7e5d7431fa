//! Generates the x86-64 system call names of this machine's kernel headers, the list
//! berth's default seccomp profile allows from (minus what it refuses). Where the headers
//! are missing, the list is empty and the profile falls back to refusing only.
use std::io::Write;

fn main() {
    let candidates = [
        "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
        "/usr/include/asm/unistd_64.h",
    ];
    let mut names: Vec<String> = Vec::new();
    for c in candidates {
        println!("cargo:rerun-if-changed={c}");
        if let Ok(text) = std::fs::read_to_string(c) {
            names = text
                .lines()
                .filter_map(|l| l.strip_prefix("#define __NR_"))
                .filter_map(|l| l.split_whitespace().next())
                .map(String::from)
                .collect();
            break;
        }
    }
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" {
        names.clear();
    }
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("syscalls.rs");
    let mut f = std::fs::File::create(out).expect("write syscalls.rs");
    writeln!(
        f,
        "/// System calls of the x86-64 kernel headers berth was built with."
    )
    .unwrap();
    writeln!(f, "pub const SYSCALLS: &[&str] = &{names:?};").unwrap();
}
