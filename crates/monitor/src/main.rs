//! `berth-monitor ROOT ID`: started by the engine for each container run (see the
//! library's `monitor` module); BERTH_RUNTIME names berth-runtime.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(root), Some(id)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: berth-monitor ROOT ID (started by berth, not by hand)");
        std::process::exit(2);
    };
    let env = berth_monitor::monitor::MonitorEnv {
        root: root.into(),
        runtime: std::env::var_os("BERTH_RUNTIME")
            .map(Into::into)
            .unwrap_or_else(|| "berth-runtime".into()),
    };
    std::process::exit(berth_monitor::monitor::run(&env, id));
}
