//! `rustpx engines`: start engines for a running kernel from a shell, with any launcher.
//!
//! This is for engines the kernel should not start itself: a batch job that runs `mpiexec`
//! inside its own allocation, or a terminal on a login node. It reads the engine connection file
//! the kernel wrote (`%engines` shows where), runs the launcher's commands in the foreground and
//! waits for them; Ctrl-C stops them. `--print` shows the commands without running them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rustpx_core::launch_options::LauncherKind;
use rustpx_kernel::launch::{self, LaunchOptions};

/// The options of `rustpx engines start`.
#[derive(Args)]
pub struct EnginesStart {
    /// The engine connection file the kernel wrote (rustpx-engines-PID.json in Jupyter's
    /// runtime directory).
    #[arg(long = "connect", value_name = "FILE")]
    connect: PathBuf,
    /// How many engines (ssh takes the counts from --hosts).
    #[arg(short = 'n', long)]
    n: Option<u32>,
    /// The launcher and its options, as `%engines start` takes them.
    #[command(flatten)]
    launch: LaunchOptions,
    /// The id the first engine asks for (the hub gives the next free one if it is taken).
    #[arg(long, default_value_t = 0)]
    first_id: u32,
    /// Print the commands the launcher would run, and run nothing.
    #[arg(long)]
    print: bool,
}

/// Runs `rustpx engines start`.
pub fn start(args: EnginesStart) -> Result<()> {
    let connection = std::fs::read_to_string(&args.connect).with_context(|| {
        format!(
            "cannot read the engine connection file {}",
            args.connect.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&connection).with_context(|| {
        format!(
            "{} is not an engine connection file",
            args.connect.display()
        )
    })?;
    let json = json.to_string();
    let options = &args.launch;
    if let Ok(LauncherKind::Batch(_)) = options.check() {
        bail!(
            "rustpx engines start runs its engines in this terminal and waits for them; to submit \
             a batch job, use `%engines start --launcher slurm --submit` (or `--launcher sge`) in \
             the notebook, or run `rustpx engines start --launcher slurm` inside your own job script"
        );
    }
    let launcher = launch::launcher_for(options)?;
    let n = args.n.or(launcher.default_count()).unwrap_or(1);
    let beside = std::env::current_exe()?
        .parent()
        .map(|dir| dir.join("rustpx-engine"))
        .context("cannot find the directory of this binary")?;
    let engine = launch::invocation(options, &*launcher, &beside);
    let ids: Vec<u32> = (args.first_id..args.first_id + n).collect();
    let commands = launcher.commands(&ids, &engine)?;
    if args.print {
        for command in &commands {
            println!(
                "{}",
                command
                    .shell_line()
                    .replace("CONNECTION_FILE", &args.connect.display().to_string())
            );
        }
        return Ok(());
    }
    launcher.check_ready()?;
    let mut children = Vec::new();
    for command in &commands {
        let mut child = command
            .process(&json)
            .spawn()
            .with_context(|| format!("cannot run {}", command.program))?;
        if let Some(stdin) = child.stdin.as_mut() {
            writeln!(stdin, "{json}").context("cannot give the engine its connection")?;
        }
        eprintln!(
            "started engines {:?} on {} (pid {})",
            command.ids,
            command.place,
            child.id()
        );
        children.push(child);
    }
    let mut failed = 0;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            failed += 1;
            eprintln!("pid {} ended: {status}", child.id());
        }
    }
    if failed > 0 {
        bail!("{failed} launched process(es) ended with an error");
    }
    Ok(())
}
