//! `rustpx-engine`: one engine of a rustpx pool.
//!
//! A thin runtime: it holds this engine's variables and runs the cells the kernel compiled for
//! it; it never compiles anything and needs no Rust toolchain. The main thread runs cells (as
//! evcxr's runtime does); the link to the hub lives on its own thread.

mod capture;
mod delivery;
mod files;
mod hub_socket;
mod link;
mod map_relay;
mod objects;

use std::path::PathBuf;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rustpx_protocol::{
    to_wire, EngineConnection, EngineId, Platform, RunReply, RunStatus, CONNECTION_ENV,
};
use rustpx_wire::WireMessage;
use tokio::sync::mpsc;

use capture::{Capture, Captured, RunReport, StreamSink};
use delivery::{Delivery, PreparedRun};
use objects::ObjectCache;
use rustpx_runtime::{Cells, LoadError};

#[derive(Parser)]
#[command(name = "rustpx-engine", version, about = "An engine of a rustpx pool")]
struct Cli {
    /// The connection file the kernel wrote (`-`: its JSON on the first line of stdin, and the
    /// engine exits when stdin closes, as when the ssh session that started it ends); without
    /// it, the JSON in $RUSTPX_ENGINE_CONNECTION.
    #[arg(long = "connect", value_name = "FILE")]
    connect: Option<PathBuf>,
    /// The engine id to ask for; without it, `--id-base` plus the MPI or Slurm rank if there is
    /// one ($PMI_RANK, $PMIX_RANK, $OMPI_COMM_WORLD_RANK, $SLURM_PROCID), else the first free id.
    #[arg(long)]
    id: Option<EngineId>,
    /// Added to the MPI or Slurm rank to make the engine id (a second batch of ranks).
    #[arg(long, default_value_t = 0)]
    id_base: EngineId,
    /// Where objects fetched from the kernel are cached by content hash (default
    /// ~/.cache/rustpx/objects); engines on one host share it.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Fetch compiled cells over the link even when the kernel's files are readable here.
    #[arg(long)]
    fetch_objects: bool,
    /// Report this platform (`ARCH-OS-GLIBC`, e.g. `aarch64-linux-2.31`) instead of the real one:
    /// lets a test see the hub refuse a host that cannot load its cells.
    #[arg(long, hide = true, value_name = "ARCH-OS-GLIBC")]
    pretend_platform: Option<String>,
    /// Give up when the hub does not answer registration within this many seconds.
    #[arg(long, default_value_t = 30.0)]
    register_timeout: f64,
    /// Exit when the hub has been silent this many seconds.
    #[arg(long, default_value_t = 30.0)]
    hub_silence: f64,
    /// Exit when this process is no longer our parent (set by the local pool).
    #[arg(long)]
    parent_pid: Option<u32>,
}

/// Where a cell finds its engine's id.
const ENGINE_ID_ENV: &str = "RUSTPX_ENGINE_ID";

/// The most messages (output, displays, replies, map pieces) waiting for the link to send them;
/// then the cell waits at its next write. It counts messages, not bytes: an output message holds
/// what its reader took from the pipe at once.
const OUTGOING_BOUND: usize = 256;

/// Our own crate at info, dependencies at warn.
const DEFAULT_LOG_FILTER: &str = "warn,rustpx_engine=info";

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        eprintln!("rustpx-engine: {error:#}");
        std::process::exit(2);
    }
}

/// The rank variables of the launchers that start engines in batches, in the order checked.
const RANK_VARIABLES: [&str; 4] = [
    "PMI_RANK",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_RANK",
    "SLURM_PROCID",
];

/// The id to ask the hub for: `--id`, else the base plus this process's rank in its batch.
fn requested_id(cli: &Cli) -> Result<Option<EngineId>> {
    if let Some(id) = cli.id {
        return Ok(Some(id));
    }
    for variable in RANK_VARIABLES {
        if let Ok(value) = std::env::var(variable) {
            let rank: EngineId = value
                .trim()
                .parse()
                .with_context(|| format!("${variable} is {value:?}, not a rank"))?;
            return Ok(Some(cli.id_base + rank));
        }
    }
    Ok(None)
}

/// This host's platform, or the one `--pretend-platform` names.
fn reported_platform(pretend: Option<&str>) -> Platform {
    let Some(text) = pretend else {
        return rustpx_protocol::this_platform();
    };
    let mut parts = text.splitn(3, '-');
    Platform {
        arch: parts.next().unwrap_or_default().to_owned(),
        os: parts.next().unwrap_or_default().to_owned(),
        glibc: parts.next().map(str::to_owned),
    }
}

/// Reads the connection blob from the first line of stdin, then exits when stdin closes.
fn connection_from_stdin() -> Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the connection from stdin")?;
    if line.trim().is_empty() {
        anyhow::bail!("--connect -: stdin closed before the connection's JSON line");
    }
    std::thread::spawn(|| {
        use std::io::Read;
        let mut rest = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut rest);
        tracing::info!("stdin closed: the launcher that started this engine is gone; exiting");
        files::remove_created();
        std::process::exit(0);
    });
    Ok(line)
}

fn read_connection(cli: &Cli) -> Result<EngineConnection> {
    let text = match &cli.connect {
        Some(path) if path.as_os_str() == "-" => connection_from_stdin()?,
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the connection file {}", path.display()))?,
        None => std::env::var(CONNECTION_ENV).with_context(|| {
            format!("no --connect FILE and no {CONNECTION_ENV} in the environment")
        })?,
    };
    serde_json::from_str(&text).context("the engine connection is not valid JSON")
}

fn run(cli: Cli) -> Result<()> {
    let connection = read_connection(&cli)?;
    let requested = requested_id(&cli)?;
    let platform = reported_platform(cli.pretend_platform.as_deref());
    let delivery = if !cli.fetch_objects && objects::shares_kernel_files(&connection) {
        Delivery::new(None)
    } else {
        let dir = cli
            .cache_dir
            .clone()
            .unwrap_or_else(ObjectCache::default_dir);
        Delivery::new(Some(ObjectCache::new(dir)))
    };
    let (outgoing_tx, outgoing_rx) = mpsc::channel::<WireMessage>(OUTGOING_BOUND);
    let session = uuid::Uuid::new_v4().to_string();
    let sink_tx = outgoing_tx.clone();
    let sink_session = session.clone();
    let sink: StreamSink = Arc::new(move |output| {
        let message = match output {
            Captured::Stream(stream) => to_wire(&sink_session, &stream),
            Captured::Display(display) => to_wire(&sink_session, &display),
        };
        // Waits while the queue is full: a cell that prints faster than the hub takes its
        // output is held at its next write instead of the engine's memory growing.
        let _ = sink_tx.blocking_send(message);
    });
    let (capture, log) = Capture::install(sink).context("cannot capture stdout and stderr")?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUSTPX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::sync::Mutex::new(log))
        .with_ansi(false)
        .init();
    if let Some(parent) = cli.parent_pid {
        watch_parent(parent);
    }

    // An engine that does not share the kernel's files cannot reach its map socket either: it
    // serves one of its own and relays it over the link.
    let map_socket = if delivery.shares_files() {
        None
    } else {
        Some(map_relay::RelaySocket::bind().context("cannot create the %pxmap relay socket")?)
    };
    let map_socket_path = map_socket.as_ref().map(|socket| socket.path.clone());
    let relay_tx = outgoing_tx.clone();
    let (runs_tx, runs) = std_mpsc::channel::<PreparedRun>();
    let (registered_forward, registered) = std_mpsc::channel::<EngineId>();
    let patience = link::Patience {
        register_timeout: Duration::from_secs_f64(cli.register_timeout.max(0.1)),
        hub_silence: Duration::from_secs_f64(cli.hub_silence.max(1.0)),
    };
    let registered_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let registered_flag = registered_once.clone();
    let (registered_tx, registered_relay) = std_mpsc::channel::<EngineId>();
    std::thread::spawn(move || {
        for id in registered_relay {
            registered_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = registered_forward.send(id);
        }
    });
    let link_thread = std::thread::Builder::new()
        .name("link".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!("cannot start the link runtime: {error}");
                    std::process::exit(2);
                }
            };
            let identity = link::Identity {
                requested_id: requested,
                platform,
            };
            let result = runtime.block_on(async move {
                let map_relay =
                    match map_socket.map(|socket| map_relay::Relay::new(socket, relay_tx)) {
                        Some(Ok(relay)) => Some(relay),
                        Some(Err(error)) => {
                            tracing::warn!("%pxmap relay unavailable: {error}");
                            None
                        }
                        None => None,
                    };
                let outgoing = link::Outgoing {
                    queue: outgoing_rx,
                    map_relay,
                };
                link::serve(
                    connection,
                    identity,
                    patience,
                    delivery,
                    outgoing,
                    runs_tx,
                    registered_tx,
                )
                .await
            });
            files::remove_created();
            match result {
                Ok(()) => std::process::exit(0),
                Err(error) if registered_once.load(std::sync::atomic::Ordering::SeqCst) => {
                    // The usual end of a local engine: the kernel went away.
                    tracing::info!("engine link ended: {error:#}");
                    std::process::exit(3);
                }
                Err(error) => {
                    // Never registered: the user needs to know why (address, key, timeout).
                    tracing::error!("{error:#}");
                    std::process::exit(2);
                }
            }
        })
        .context("cannot start the link thread")?;

    let Ok(engine_id) = registered.recv() else {
        // The link ended before registering. Its thread says why on the real stderr and exits;
        // returning here instead would race it and print into the captured stderr, unseen.
        let _ = link_thread.join();
        anyhow::bail!("the link ended before registering");
    };
    // Cells read their engine's id from here (`std::env::var("RUSTPX_ENGINE_ID")`). Set on the
    // main thread before any cell runs, so nothing reads the environment concurrently.
    std::env::set_var(ENGINE_ID_ENV, engine_id.to_string());
    if let Some(path) = &map_socket_path {
        std::env::set_var(map_relay::RELAY_ENV, path);
    }
    tracing::debug!("engine {engine_id} ready");
    serve_runs(&capture, runs, &outgoing_tx, &session);
    Ok(())
}

/// Runs cells in arrival order on this (the main) thread.
fn serve_runs(
    capture: &Capture,
    runs: std_mpsc::Receiver<PreparedRun>,
    outgoing: &mpsc::Sender<WireMessage>,
    session: &str,
) {
    let mut cells = Cells::new();
    let mut execution_count = 0u32;
    let mut last_cell = String::new();
    for prepared in runs {
        let run = &prepared.request;
        if run.cell_id != last_cell {
            execution_count += 1;
            last_cell = run.cell_id.clone();
        }
        capture.begin(&run.run_id, run.may_have_value);
        let started = now();
        let loaded = start(&mut cells, &prepared);
        // Values too large for one reply fail the run with the reason (they stay on the engine).
        let (written, contents, too_large) = match files::read_outputs(&run.files_out) {
            Ok((written, contents)) => (written, contents, None),
            Err(error) => (Vec::new(), Vec::new(), Some(error.to_string())),
        };
        // The reply is built and queued by the capture's reader that sees the run's end last
        // (after every byte of output went out): this thread sleeps until the next run.
        let run_id = run.run_id.clone();
        let outgoing = outgoing.clone();
        let session = session.to_owned();
        capture.finish(Box::new(move |report| {
            let reply = RunReply {
                run_id,
                execution_count,
                status: match too_large {
                    Some(message) => RunStatus::LoadFailed { message },
                    None => status_of(loaded, &report),
                },
                value: report.stdout.value,
                changed_type: report.stdout.changed_type,
                started,
                completed: now(),
                files: written,
            };
            let mut message = to_wire(&session, &reply);
            message.buffers = contents;
            let _ = outgoing.blocking_send(message);
        }));
    }
}

/// Why a run's cell did not start; the hub hears it as a load failure, in these words.
#[derive(Debug, thiserror::Error)]
enum NotStarted {
    /// The objects never arrived whole (the kernel's or the cache's words).
    #[error("{0}")]
    Delivery(String),
    #[error(transparent)]
    Inputs(#[from] files::WriteError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Puts the run's input files in place and runs its cell (output goes to the capture).
fn start(cells: &mut Cells, prepared: &PreparedRun) -> Result<(), NotStarted> {
    if let Some(error) = &prepared.error {
        return Err(NotStarted::Delivery(error.clone()));
    }
    let run = &prepared.request;
    files::write_inputs(&prepared.files_in)?;
    files::clear(&run.files_out);
    cells.preload(&prepared.libraries)?;
    cells.run(&prepared.object, &run.fn_name)?;
    Ok(())
}

fn status_of(loaded: Result<(), NotStarted>, report: &RunReport) -> RunStatus {
    if let Err(error) = loaded {
        return RunStatus::LoadFailed {
            message: error.to_string(),
        };
    }
    if report.stdout.panicked {
        let (location, message) = report.stderr.panic.clone().unwrap_or_default();
        return RunStatus::Panic { message, location };
    }
    if report.stdout.user_error {
        return RunStatus::UserError;
    }
    RunStatus::Ok
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Exits when the kernel that started us is gone, so a killed kernel leaves no engines behind.
fn watch_parent(parent: u32) {
    // Linux: also ask for SIGKILL when the parent dies (belt and braces with the watch below).
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    std::thread::spawn(move || {
        // A thread that sleeps until the kernel ends: a pool of 1024 engines that each polled
        // four times a second would wake the machine 4096 times a second for nothing.
        if ParentFd::open(parent).is_some_and(|kernel| kernel.wait_for_exit()) {
            tracing::info!("the kernel (pid {parent}) is gone; exiting");
            std::process::exit(0);
        }
        // No pidfd (Linux before 5.3, or a sandbox that refuses it), or it failed: poll.
        loop {
            if !is_parent(parent) {
                tracing::info!("the kernel (pid {parent}) is gone; exiting");
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
}

fn is_parent(pid: u32) -> bool {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() as u32 == pid }
}

/// A process descriptor of the kernel, readable once the kernel has exited.
struct ParentFd(std::os::fd::OwnedFd);

impl ParentFd {
    /// `None` when this system has no pidfds, or when the kernel is already gone (then the
    /// caller's poll notices at once).
    fn open(parent: u32) -> Option<ParentFd> {
        let pid = libc::pid_t::try_from(parent).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = std::os::fd::RawFd::try_from(fd)
            .ok()
            .filter(|fd| *fd >= 0)?;
        // SAFETY: the descriptor was just created for us and nothing else owns it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // The kernel may have ended (and its pid been reused) before the descriptor was made:
        // only while it is still our parent does the descriptor name it.
        is_parent(parent).then_some(ParentFd(fd))
    }

    /// Blocks until the kernel exits (true), or returns false if the descriptor cannot be
    /// waited on.
    fn wait_for_exit(&self) -> bool {
        use std::os::fd::AsRawFd;
        // A pidfd polls readable once its process has exited.
        capture::pipe::wait_readable(self.0.as_raw_fd())
    }
}
