//! `%engines [list] | start [...] | stop [IDS] | restart IDS`.

use super::{split_equals, Args, UsageError};
use crate::launch_options::{self, LaunchOptions};

/// `%engines …`.
#[derive(Debug, Clone, PartialEq)]
pub enum EnginesCommand {
    List,
    /// `start [-n N] [--launcher NAME] [--hosts H:N,...] [--engine PATH] [--launcher-arg A]...
    /// [--engine-arg A]... [--print]`; `print` shows the commands instead of running them.
    Start {
        n: Option<u32>,
        launch: LaunchOptions,
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
pub(super) const START_USAGE: &str = "%engines start [-n N] [--launcher local|ssh|mpi|slurm] [--hosts HOST:N,...] [--tunnel] [--engine PATH] [--launcher-arg ARG]... [--engine-arg ARG]... [--print]";

/// The most engines one `%engines start` may ask for: far beyond one machine's pool (1024 run on
/// 2 cores), well below what would exhaust the kernel building their records.
pub const MAX_ENGINES_PER_START: u32 = 65_536;

pub(super) fn parse_engines_start(items: &[String]) -> Result<EnginesCommand, UsageError> {
    let mut n = None;
    let mut launch = LaunchOptions::default();
    let mut print = false;
    let mut args = Args::new(items);
    while let Some(arg) = args.next() {
        let (name, inline) = split_equals(arg);
        let mut value = |display: &str| -> Result<String, UsageError> {
            match inline {
                Some(v) => Ok(v.to_owned()),
                None => args.value(display).map(str::to_owned),
            }
        };
        match name {
            "-n" | "--n" => {
                let v = value("-n")?;
                let count: u32 = v
                    .parse()
                    .map_err(|_| UsageError(format!("argument -n: invalid int value: '{v}'")))?;
                if count == 0 {
                    return Err(UsageError("argument -n: start at least 1 engine".into()));
                }
                if count > MAX_ENGINES_PER_START {
                    return Err(UsageError(format!(
                        "argument -n: {count} engines is more than one start may ask for ({MAX_ENGINES_PER_START}); start them in several steps"
                    )));
                }
                n = Some(count);
            }
            "--launcher" => launch.launcher = Some(value("--launcher")?),
            "--hosts" => {
                launch.hosts = launch_options::parse_hosts(&value("--hosts")?)
                    .map_err(|e| UsageError(e.to_string()))?;
            }
            "--engine" => launch.engine = Some(value("--engine")?),
            "--launcher-arg" | "--engine-arg" => {
                let v = match inline {
                    Some(v) => v.to_owned(),
                    None => args.raw_value(name)?.to_owned(),
                };
                if name == "--launcher-arg" {
                    launch.launcher_args.push(v);
                } else {
                    launch.engine_args.push(v);
                }
            }
            "--print" => print = true,
            "--tunnel" => launch.tunnel = true,
            _ => return Err(UsageError(format!("unrecognized arguments: {arg}"))),
        }
    }
    if n.is_some() && !launch.hosts.is_empty() {
        return Err(UsageError(
            "-n and --hosts both count engines: give the counts in --hosts HOST:N only".into(),
        ));
    }
    launch.check().map_err(|e| UsageError(e.0))?;
    Ok(EnginesCommand::Start { n, launch, print })
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
