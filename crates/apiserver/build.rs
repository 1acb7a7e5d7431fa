//! Finds whether kubectl 1.32 or newer is on PATH (and whether an NVIDIA GPU with a
//! CDI spec is here, for the one test that needs it). The API server's tests drive it as
//! users do; where it is missing (Debian 12 packages only 1.20, and scripts/deps.sh
//! cannot fetch it without internet) they are ignored with the reason, so the test run
//! reports them as skipped rather than failed or silently passed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kubectl_missing)");
    println!("cargo::rerun-if-env-changed=PATH");
    // A kubectl installed later (scripts/deps.sh puts it in /usr/local/bin) is noticed.
    for dir in ["/usr/local/bin", "/usr/bin"] {
        if PathBuf::from(dir).is_dir() {
            println!("cargo::rerun-if-changed={dir}");
        }
    }
    let minor = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| client_minor(&String::from_utf8_lossy(&o.stdout)));
    nvidia_gpu();
    if minor.is_none_or(|m| m < 32) {
        println!("cargo::rustc-cfg=kubectl_missing");
        println!(
            "cargo::warning=kubectl 1.32 or newer is not on PATH (found: {}): the tests that drive kubectl are skipped",
            minor.map_or("none".to_string(), |m| format!("1.{m}"))
        );
    }
}

/// The minor version in `kubectl version --client -o json` ("minor": "32").
fn client_minor(json: &str) -> Option<u32> {
    let at = json.find("\"minor\"")?;
    let rest = &json[at + "\"minor\"".len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Whether an NVIDIA GPU, its driver and a CDI spec for nvidia.com/gpu are here (the
/// device plugin tests' optional GPU flow); where not, that test is skipped with the
/// reason.
fn nvidia_gpu() {
    println!("cargo::rustc-check-cfg=cfg(nvidia_gpu_missing)");
    let cdi_dirs = ["/etc/cdi", "/var/run/cdi"];
    for dir in cdi_dirs {
        if PathBuf::from(dir).is_dir() {
            println!("cargo::rerun-if-changed={dir}");
        }
    }
    let spec = cdi_dirs.iter().any(|dir| {
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|s| s.contains("nvidia.com/gpu"))
            })
        })
    });
    if !(PathBuf::from("/dev/nvidiactl").exists() && spec) {
        println!("cargo::rustc-cfg=nvidia_gpu_missing");
    }
}
