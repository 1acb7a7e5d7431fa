//! `berth-monitor DIR`: started by the engine for each container run, DIR being the
//! container's state directory with the engine's `supervise.json` (see the library's
//! `monitor` module); BERTH_RUNTIME names berth-runtime.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).filter(|_| args.len() == 2) else {
        eprintln!("usage: berth-monitor DIR (started by berth, not by hand)");
        std::process::exit(2);
    };
    let runtime: std::path::PathBuf = std::env::var_os("BERTH_RUNTIME")
        .map(Into::into)
        .unwrap_or_else(|| "berth-runtime".into());
    std::process::exit(berth_monitor::monitor::run(
        std::path::Path::new(dir),
        &runtime,
    ));
}
