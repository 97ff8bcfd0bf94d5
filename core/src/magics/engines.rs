//! `%engines [list] | start [...] | stop [IDS] | restart IDS`.

use clap::Args;

use super::{argparse, UsageError};
use crate::launch_options::LaunchOptions;

/// `%engines …`.
#[derive(Debug, Clone, PartialEq)]
pub enum EnginesCommand {
    List,
    /// `start [-n N] [--launcher NAME] [--hosts H:N,...] [--submit] [--queue Q] [--time T]
    /// [--resource R]... [--template FILE] [--engine PATH] [--launcher-arg A]...
    /// [--engine-arg A]... [--print]`; `print` shows the commands (or the job script) instead
    /// of running them.
    Start {
        n: Option<u32>,
        /// Boxed: the launcher's options outweigh every other command.
        launch: Box<LaunchOptions>,
        print: bool,
    },
    Stop {
        ids: Option<Vec<u32>>,
    },
    Restart {
        ids: Vec<u32>,
    },
}

pub(super) fn ids(items: &[String], what: &str) -> Result<Vec<u32>, UsageError> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| UsageError(format!("%engines {what}: '{s}' is not an engine id")))
        })
        .collect()
}

/// The options of `%engines start`, shown with its usage errors.
pub(super) const START_USAGE: &str = "%engines start [-n N] [--launcher local|ssh|mpi|slurm|sge] [--hosts HOST:N,...] [--tunnel] [--submit] [--queue Q] [--time HH:MM:SS] [--resource ARG]... [--template FILE] [--engine PATH] [--launcher-arg ARG]... [--engine-arg ARG]... [--print]";

/// The most engines one `%engines start` may ask for: far beyond one machine's pool (1024 run on
/// 2 cores), well below what would exhaust the kernel building their records.
pub const MAX_ENGINES_PER_START: u32 = 65_536;

/// `%engines start`'s arguments: a count, the launcher's options, and `--print`.
#[derive(Args)]
struct StartArgs {
    /// `-n N`, also spelt `--n` (hidden, so that errors name it `-n` as they always did).
    #[arg(short = 'n', alias = "n", value_parser = engine_count)]
    n: Option<u32>,
    #[command(flatten)]
    launch: LaunchOptions,
    #[arg(long)]
    print: bool,
}

/// `-n`'s value parser: a count between 1 and [`MAX_ENGINES_PER_START`].
fn engine_count(value: &str) -> Result<u32, UsageError> {
    let count: u32 = value
        .parse()
        .map_err(|_| UsageError(format!("argument -n: invalid int value: '{value}'")))?;
    if count == 0 {
        return Err(UsageError("argument -n: start at least 1 engine".into()));
    }
    if count > MAX_ENGINES_PER_START {
        return Err(UsageError(format!(
            "argument -n: {count} engines is more than one start may ask for ({MAX_ENGINES_PER_START}); start them in several steps"
        )));
    }
    Ok(count)
}

fn parse_engines_start(items: &[String]) -> Result<EnginesCommand, UsageError> {
    let StartArgs { n, launch, print } = argparse::parse(items)?;
    if n.is_some() && !launch.hosts.is_empty() {
        return Err(UsageError(
            "-n and --hosts both count engines: give the counts in --hosts HOST:N only".into(),
        ));
    }
    launch.check().map_err(|e| UsageError(e.0))?;
    Ok(EnginesCommand::Start {
        n,
        launch: Box::new(launch),
        print,
    })
}

pub(super) fn parse_engines(items: &[String]) -> Result<EnginesCommand, UsageError> {
    let usage = "usage: %engines [list] | start [-n N] | stop [IDS] | restart IDS";
    match items.first().map(String::as_str) {
        None | Some("list") if items.len() <= 1 => Ok(EnginesCommand::List),
        Some("start") => parse_engines_start(&items[1..])
            .map_err(|UsageError(text)| UsageError(format!("{text}\n{usage}\n{START_USAGE}"))),
        Some("stop") => {
            let rest = &items[1..];
            Ok(EnginesCommand::Stop {
                ids: if rest.is_empty() || rest == ["all"] {
                    None
                } else {
                    Some(ids(rest, "stop")?)
                },
            })
        }
        Some("restart") => {
            let ids = ids(&items[1..], "restart")?;
            if ids.is_empty() {
                return Err(UsageError(format!(
                    "%engines restart needs engine ids\n{usage}"
                )));
            }
            Ok(EnginesCommand::Restart { ids })
        }
        _ => Err(UsageError(format!(
            "unrecognized arguments: {}\n{usage}",
            items.join(" ")
        ))),
    }
}
