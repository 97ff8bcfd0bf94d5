//! `rustpx`: the kernel binary (`rustpx kernel`), its installer, and evcxr's runtime.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

mod engines_cli;
use rustpx_kernel::{frontend, install, log_file, paths};
use tracing_subscriber::Layer;

#[derive(Parser)]
#[command(
    name = "rustpx",
    version,
    about = "A Jupyter kernel for Rust with ipyparallel's parallel magics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the kernel for a Jupyter connection file (what the kernelspec runs).
    Kernel {
        #[arg(short = 'f', long = "connection-file")]
        connection_file: PathBuf,
        /// The address the engine hub binds (default 127.0.0.1; 0.0.0.0 for every interface).
        /// Same as $RUSTPX_HUB_IP.
        #[arg(long)]
        ip: Option<String>,
        /// The address engines dial to reach the hub, as other hosts see this one (default: the
        /// bind address, or this host's first non-loopback address when binding 0.0.0.0). Same
        /// as $RUSTPX_HUB_LOCATION.
        #[arg(long)]
        location: Option<String>,
    },
    /// Start engines for a running kernel (its engine connection file) with any launcher.
    #[command(subcommand)]
    Engines(EnginesCommand),
    /// Install the "Rust (parallel)" kernelspec.
    Install(ScopeArgs),
    /// Remove the kernelspec.
    Uninstall(ScopeArgs),
    /// Time one plain evcxr context from creation to its first evaluated cell (the baseline the
    /// benchmark compares pool start-up with). Prints seconds.
    #[command(hide = true)]
    MeasureEvcxrStart,
}

#[derive(Subcommand)]
enum EnginesCommand {
    /// Start engines and wait for them (Ctrl-C stops them); --print only shows the commands.
    Start(engines_cli::EnginesStart),
}

#[derive(Args)]
#[group(multiple = false)]
struct ScopeArgs {
    /// The user's Jupyter data directory (the default).
    #[arg(long)]
    user: bool,
    /// The active Python environment (VIRTUAL_ENV, else python3's sys.prefix).
    #[arg(long)]
    sys_prefix: bool,
    /// DIR/share/jupyter/kernels.
    #[arg(long, value_name = "DIR")]
    prefix: Option<PathBuf>,
}

impl ScopeArgs {
    fn scope(&self) -> install::Scope {
        match (&self.prefix, self.sys_prefix) {
            (Some(dir), _) => install::Scope::Prefix(dir.clone()),
            (None, true) => install::Scope::SysPrefix,
            (None, false) => install::Scope::User,
        }
    }
}

/// Our own crates at info; everything else (rust-analyzer is very chatty) at warn.
const DEFAULT_LOG_FILTER: &str = "warn,rustpx=info,rustpx_kernel=info";

fn main() -> Result<()> {
    // When the px context starts this binary as its bridge to the engines, or the plain context
    // (or evcxr itself) as its runtime, these calls never return.
    rustpx_kernel::px::run_bridge_if_requested();
    rustpx_kernel::evaluator::runtime::run_if_requested();
    // As evcxr's rustc wrapper: keep the dependency cache private (see dep_cache).
    rustpx_kernel::dep_cache::prepare_rustc_wrapper();
    // As the wrapper building a cell: serve it from the cell cache or compile and keep it.
    rustpx_kernel::cell_cache::serve_if_cell_build();
    evcxr::runtime_hook();
    let cli = Cli::parse();
    match cli.command {
        Command::Kernel {
            connection_file,
            ip,
            location,
        } => {
            // Read by the hub when it binds; set before any thread starts.
            if let Some(ip) = ip {
                std::env::set_var(rustpx_kernel::px::hub_address::IP_ENV, ip);
            }
            if let Some(location) = location {
                std::env::set_var(rustpx_kernel::px::hub_address::LOCATION_ENV, location);
            }
            run_kernel(connection_file)
        }
        Command::Engines(EnginesCommand::Start(args)) => engines_cli::start(args),
        Command::Install(args) => {
            let binary = std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .context("cannot find the path of the rustpx binary")?;
            let dir = install::install(&args.scope(), &binary)?;
            println!(
                "Installed the \"Rust (parallel)\" kernelspec in {}",
                dir.display()
            );
            println!("It runs {}", binary.display());
            Ok(())
        }
        Command::MeasureEvcxrStart => {
            let started = std::time::Instant::now();
            let (mut context, _outputs) = evcxr::EvalContext::new()
                .map_err(|e| anyhow::anyhow!("evcxr could not start: {e}"))?;
            context
                .eval("0")
                .map_err(|e| anyhow::anyhow!("evcxr could not evaluate: {e}"))?;
            println!("{:.3}", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Uninstall(args) => {
            let dir = install::uninstall(&args.scope())?;
            println!("Removed the kernelspec at {}", dir.display());
            Ok(())
        }
    }
}

/// Logs to stderr (Jupyter shows it in its server log) and to a file in Jupyter's runtime
/// directory, which engines append to as well, so one file says why an engine did not start.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("RUSTPX_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER))
    };
    let path = paths::log_file();
    let file = path
        .parent()
        .map(std::fs::create_dir_all)
        .and_then(Result::ok)
        .and_then(|_| {
            // The log holds cells' text and errors: the user's alone (0600).
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .ok()
        });
    let file_layer = file.map(|file| {
        let already = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bounded = log_file::BoundedLog::new(file, already, log_file::LOG_LIMIT_BYTES);
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(bounded))
            .with_filter(filter())
    });
    // One line per cell is for the log file; the server's terminal gets the rest.
    let quiet_cells = format!("{}=warn", rustpx_kernel::frontend::CELLS_LOG)
        .parse()
        .map(|directive| filter().add_directive(directive))
        .unwrap_or_else(|_| filter());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(quiet_cells),
        )
        .with(file_layer)
        .init();
    std::env::set_var(paths::LOG_FILE_ENV, &path);
    tracing::info!(
        "rustpx {} logging to {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
}

fn run_kernel(connection_file: PathBuf) -> Result<()> {
    init_logging();
    let connection = frontend::read_connection_file(&connection_file)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let served = runtime.block_on(frontend::serve(connection));
    rustpx_kernel::private_dir::remove();
    served?;
    // Leave without waiting for the evaluator thread, which may be inside a cell.
    std::process::exit(0);
}
