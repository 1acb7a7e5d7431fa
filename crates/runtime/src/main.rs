//! `berth-runtime`: the command line, shaped like runc's so podman, conmon and containerd
//! can call it in runc's place.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_runtime::container::{self, CreateOpts, ExecOpts, UpdateFlags};
use berth_runtime::state::Root;
use berth_runtime::{features, logging, protect, signal, Error};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "berth-runtime",
    version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0"),
    about = "A runc-compatible OCI container runtime",
    disable_help_subcommand = true
)]
struct Cli {
    /// Directory for the runtime's container state
    /// (default: /run/berth-runtime for root, $XDG_RUNTIME_DIR/berth-runtime otherwise)
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Write log lines to this file instead of stderr
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log debug lines too
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd's cgroup driver (not supported: berth-runtime manages cgroupfs directly)
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Rootless mode: auto, true or false (berth-runtime detects it from the user id)
    #[arg(long, default_value = "auto")]
    rootless: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(clap::Args)]
struct CreateArgs {
    /// Bundle directory (holds config.json); defaults to the current directory
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Write the container's init pid to this file
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root (for a rootfs on initramfs)
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Do not give the container a session keyring of its own
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass this many extra descriptors (from fd 3) to the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Container id
    id: String,
}

impl CreateArgs {
    fn opts(&self) -> CreateOpts {
        CreateOpts {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            preserve_fds: self.preserve_fds,
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container (it waits for `start`)
    Create(CreateArgs),
    /// Start a created container
    Start {
        /// Container id
        id: String,
    },
    /// Create and start a container; without --detach, wait and return its exit code
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container started
        #[arg(short, long)]
        detach: bool,
        /// Accepted for runc compatibility (the runtime is a subreaper only in the foreground)
        #[arg(long = "no-subreaper", hide = true)]
        no_subreaper: bool,
    },
    /// Print the state of a container (OCI state JSON)
    State {
        /// Container id
        id: String,
    },
    /// Send a signal to the container's init (or all its processes)
    Kill {
        /// Signal every process of the container
        #[arg(short, long)]
        all: bool,
        /// Container id
        id: String,
        /// Signal name or number
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it had
    Delete {
        /// Kill the container first if it still runs
        #[arg(short, long)]
        force: bool,
        /// Container id
        id: String,
    },
    /// Run a process in a running container
    Exec {
        /// A process.json to run
        #[arg(short, long)]
        process: Option<PathBuf>,
        /// Allocate a pty
        #[arg(short, long)]
        tty: bool,
        /// Unix socket that receives the pty master
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Write the process's pid to this file
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Return once the process started
        #[arg(short, long)]
        detach: bool,
        /// Working directory in the container
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Extra environment variable, KEY=value
        #[arg(short, long)]
        env: Vec<String>,
        /// UID[:GID] to run as
        #[arg(short, long)]
        user: Option<String>,
        /// Supplementary group id
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        /// Capability to add
        #[arg(short, long)]
        cap: Vec<String>,
        /// Set no_new_privs
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        /// Pass this many extra descriptors (from fd 3)
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: u32,
        /// Exec even into a paused container
        #[arg(long = "ignore-paused")]
        ignore_paused: bool,
        /// AppArmor profile (not supported)
        #[arg(long)]
        apparmor: Option<String>,
        /// SELinux process label (not supported)
        #[arg(long = "process-label")]
        process_label: Option<String>,
        /// Container id
        id: String,
        /// Command and arguments
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the processes of a container
    Ps {
        /// table (ps output) or json (pids)
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Container id
        id: String,
        /// Options passed to ps(1) (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers
    #[command(alias = "ls")]
    List {
        /// table or json
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Print ids only
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of a container
    Pause {
        /// Container id
        id: String,
    },
    /// Thaw a paused container
    Resume {
        /// Container id
        id: String,
    },
    /// Change a running container's resource limits
    Update {
        /// LinuxResources JSON file ("-" for stdin)
        #[arg(short, long)]
        resources: Option<PathBuf>,
        /// CPU CFS period (µs)
        #[arg(long = "cpu-period")]
        cpu_period: Option<u64>,
        /// CPU CFS quota (µs, -1 for none)
        #[arg(long = "cpu-quota", allow_hyphen_values = true)]
        cpu_quota: Option<i64>,
        /// CPU realtime period (µs)
        #[arg(long = "cpu-rt-period")]
        cpu_rt_period: Option<u64>,
        /// CPU realtime runtime (µs)
        #[arg(long = "cpu-rt-runtime")]
        cpu_rt_runtime: Option<i64>,
        /// CPU shares
        #[arg(long = "cpu-share")]
        cpu_share: Option<u64>,
        /// CPUs the container may use (e.g. 0-1)
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        /// Memory nodes the container may use
        #[arg(long = "cpuset-mems")]
        cpuset_mems: Option<String>,
        /// Kernel memory limit
        #[arg(long = "kernel-memory")]
        kernel_memory: Option<String>,
        /// Kernel TCP memory limit
        #[arg(long = "kernel-memory-tcp")]
        kernel_memory_tcp: Option<String>,
        /// Memory limit (e.g. 512m; -1 for none)
        #[arg(short, long, allow_hyphen_values = true)]
        memory: Option<String>,
        /// Memory soft limit
        #[arg(long = "memory-reservation", allow_hyphen_values = true)]
        memory_reservation: Option<String>,
        /// Memory plus swap limit
        #[arg(long = "memory-swap", allow_hyphen_values = true)]
        memory_swap: Option<String>,
        /// Maximum number of processes (-1 for none)
        #[arg(long = "pids-limit", allow_hyphen_values = true)]
        pids_limit: Option<i64>,
        /// Block IO weight (10 to 1000)
        #[arg(long = "blkio-weight")]
        blkio_weight: Option<u16>,
        /// Intel RDT L3 cache schema (not supported)
        #[arg(long = "l3-cache-schema")]
        l3_cache_schema: Option<String>,
        /// Intel RDT memory bandwidth schema (not supported)
        #[arg(long = "mem-bw-schema")]
        mem_bw_schema: Option<String>,
        /// Container id
        id: String,
    },
    /// Print resource usage events of a container
    Events {
        /// Print one stats event and exit
        #[arg(long)]
        stats: bool,
        /// Time between stats events
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Container id
        id: String,
    },
    /// Print what this runtime supports (JSON)
    Features,
    /// Write a default config.json
    Spec {
        /// Directory to write config.json into
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for running without root
        #[arg(long)]
        rootless: bool,
    },
    /// Checkpoint a container (not supported)
    Checkpoint {
        /// Any arguments
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Restore a container (not supported)
    Restore {
        /// Any arguments
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    berth_runtime::logging::start_clock();
    let cli = Cli::parse();
    if let Err(e) = check_preserved_fds(&cli.cmd) {
        eprintln!("berth-runtime: {e}");
        return ExitCode::from(1);
    }
    let format = match cli.log_format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    if let Err(e) = logging::init(cli.log.as_deref(), format, cli.debug) {
        eprintln!("berth-runtime: open log file: {e}");
        return ExitCode::from(1);
    }
    let result = dispatch(cli);
    logging::phase("exit");
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let msg = e.to_string();
            if logging::has_file() {
                logging::error(&msg);
            }
            eprintln!("berth-runtime: {msg}");
            ExitCode::from(1)
        }
    }
}

/// `--preserve-fds N` hands descriptors 3..3+N to the container: they must be open
/// before the runtime opens anything itself, or its own descriptors (log file, sockets)
/// would take those numbers and leak into the container.
fn check_preserved_fds(cmd: &Cmd) -> Result<(), Error> {
    let n = match cmd {
        Cmd::Create(a) | Cmd::Run { create: a, .. } => a.preserve_fds,
        Cmd::Exec { preserve_fds, .. } => *preserve_fds,
        _ => 0,
    };
    if n > 65536 {
        return Err(Error::invalid(format!(
            "--preserve-fds {n}: too many descriptors"
        )));
    }
    for fd in 3..3 + n {
        if !berth_runtime::sys::fd_is_open(fd as i32) {
            return Err(Error::invalid(format!(
                "--preserve-fds {n}: descriptor {fd} is not open (pass the descriptors 3 to {} open)",
                2 + n
            )));
        }
    }
    Ok(())
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)
        .map_err(|e| Error::invalid(format!("write JSON: {e}")))?;
    writeln!(out).map_err(|e| Error::io("write to stdout", e))
}

fn dispatch(cli: Cli) -> Result<i32, Error> {
    if cli.systemd_cgroup {
        return Err(Error::unsupported(
            "--systemd-cgroup: the systemd cgroup driver is not supported by berth-runtime (it manages cgroupfs directly); configure your engine to use the cgroupfs manager",
        ));
    }
    berth_runtime::rootless::set_mode(match cli.rootless.as_str() {
        "auto" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            return Err(Error::invalid(format!(
                "--rootless {other:?}: use auto, true or false"
            )))
        }
    });
    let root = Root(
        cli.root
            .clone()
            .unwrap_or_else(berth_runtime::rootless::default_root),
    );
    match cli.cmd {
        Cmd::Create(a) => {
            protect::ensure_protected()?;
            container::create(&root, &a.opts(), false)?;
            Ok(0)
        }
        Cmd::Start { id } => container::start(&root, &id).map(|_| 0),
        Cmd::Run { create, detach, .. } => {
            protect::ensure_protected()?;
            container::run(&root, &create.opts(), detach)
        }
        Cmd::State { id } => {
            print_json(&container::state(&root, &id)?)?;
            Ok(0)
        }
        Cmd::Kill { all, id, signal: s } => {
            container::kill(&root, &id, signal::parse(&s)?, all)?;
            Ok(0)
        }
        Cmd::Delete { force, id } => container::delete(&root, &id, force).map(|_| 0),
        Cmd::Exec {
            process,
            tty,
            console_socket,
            pid_file,
            detach,
            cwd,
            env,
            user,
            additional_gids,
            cap,
            no_new_privs,
            preserve_fds,
            ignore_paused,
            apparmor,
            process_label,
            id,
            command,
        } => {
            if apparmor.as_ref().is_some_and(|a| !a.is_empty())
                && !berth_runtime::spec::apparmor_enabled()
            {
                return Err(Error::unsupported(
                    "--apparmor: AppArmor is not enabled on this host",
                ));
            }
            if process_label.is_some_and(|l| !l.is_empty()) {
                return Err(Error::unsupported(
                    "--process-label: SELinux labels are not supported by berth-runtime",
                ));
            }
            protect::ensure_protected()?;
            container::exec(
                &root,
                &ExecOpts {
                    id,
                    process_file: process,
                    args: command,
                    tty,
                    console_socket,
                    pid_file,
                    detach,
                    cwd,
                    env,
                    user,
                    additional_gids,
                    caps: cap,
                    no_new_privs,
                    preserve_fds,
                    ignore_paused,
                    apparmor,
                },
            )
        }
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => {
            let out = container::ps(&root, &id, format == Format::Json, &ps_args)?;
            print!("{out}");
            if format == Format::Json {
                println!();
            }
            Ok(0)
        }
        Cmd::List { format, quiet } => {
            let list = container::list(&root)?;
            if quiet {
                for e in &list {
                    println!("{}", e.id);
                }
            } else if format == Format::Json {
                serde_json::to_writer(std::io::stdout(), &list)
                    .map_err(|e| Error::invalid(format!("write JSON: {e}")))?;
                println!();
            } else {
                println!(
                    "{:<20} {:<10} {:<10} {:<40} {:<32} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for e in &list {
                    println!(
                        "{:<20} {:<10} {:<10} {:<40} {:<32} {}",
                        e.id,
                        e.pid,
                        e.status,
                        e.bundle.display(),
                        e.created,
                        e.owner
                    );
                }
            }
            Ok(0)
        }
        Cmd::Pause { id } => container::pause(&root, &id).map(|_| 0),
        Cmd::Resume { id } => container::resume(&root, &id).map(|_| 0),
        Cmd::Update {
            resources,
            cpu_period,
            cpu_quota,
            cpu_rt_period,
            cpu_rt_runtime,
            cpu_share,
            cpuset_cpus,
            cpuset_mems,
            kernel_memory,
            kernel_memory_tcp,
            memory,
            memory_reservation,
            memory_swap,
            pids_limit,
            blkio_weight,
            l3_cache_schema,
            mem_bw_schema,
            id,
        } => {
            if l3_cache_schema.is_some() || mem_bw_schema.is_some() {
                return Err(Error::unsupported(
                    "--l3-cache-schema/--mem-bw-schema: Intel RDT is not supported by berth-runtime",
                ));
            }
            let flags = UpdateFlags {
                resources,
                cpu_period,
                cpu_quota,
                cpu_rt_period,
                cpu_rt_runtime,
                cpu_share,
                cpuset_cpus,
                cpuset_mems,
                memory,
                memory_reservation,
                memory_swap,
                kernel_memory,
                kernel_memory_tcp,
                pids_limit,
                blkio_weight,
            };
            container::update(&root, &id, &flags).map(|_| 0)
        }
        Cmd::Events {
            stats,
            interval,
            id,
        } => {
            let mut out = std::io::stdout().lock();
            container::events(&root, &id, stats, interval, &mut out)?;
            Ok(0)
        }
        Cmd::Features => {
            print_json(&features::features())?;
            Ok(0)
        }
        Cmd::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(Error::invalid(format!(
                    "{} exists already: remove it first",
                    path.display()
                )));
            }
            let text = serde_json::to_string_pretty(&features::default_spec(rootless))
                .expect("spec serializes");
            std::fs::write(&path, text + "\n")
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
            Ok(0)
        }
        Cmd::Checkpoint { .. } | Cmd::Restore { .. } => Err(Error::unsupported(
            "checkpoint/restore (CRIU) is not supported by berth-runtime",
        )),
    }
}
