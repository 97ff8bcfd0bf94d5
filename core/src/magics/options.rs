//! The option groups several magics flatten in, as ipyparallel shares `exec_args` and
//! `output_args`: where and how a cell runs ([`ExecArgs`]: `-t`, `--block`, `--stream`,
//! `--verbose`, `--progress-after`, `--signal-on-interrupt`; `%%px` and `%pxconfig`), and how its
//! outputs are shown ([`OutputArgs`]: `--group-outputs`, `-e`, `-r`, `-o`; `%%px` and
//! `%pxresult`). `--timeout` is one of the exec options, so that `%pxconfig` can make it the
//! default of unattended runs.
//!
//! clap wants one field per spelling (`--block` and `--noblock`), the kernel one `Option<bool>`
//! per setting, where `None` means "not given here" so that `%pxconfig` merges only what it
//! names; so the clap structs stay private and convert into [`ExecOptions`] and [`Grouping`].

use clap::Args;

use super::{identifier, UsageError};
use crate::targets::{self, Targets};

/// How `--group-outputs` orders outputs of several engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    /// All stdout, all stderr, then displays per engine, then values.
    #[default]
    Type,
    /// Everything of one engine, then the next.
    Engine,
    /// The i-th display of every engine in turn.
    Order,
}

/// The options `%%px` and `%pxconfig` share; `None` means "not given here".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOptions {
    pub targets: Option<Targets>,
    pub block: Option<bool>,
    pub stream: Option<bool>,
    pub verbose: Option<bool>,
    pub progress_after: Option<f64>,
    /// The signal to send on interrupt; `Some(0)` sends none.
    pub signal_on_interrupt: Option<i32>,
    /// Seconds after which engines still running the cell are interrupted; `Some(0.0)` waits
    /// as long as they run (the default).
    pub timeout: Option<f64>,
}

/// `--group-outputs`' value parser.
fn grouping(value: &str) -> Result<Grouping, UsageError> {
    match value {
        "type" => Ok(Grouping::Type),
        "engine" => Ok(Grouping::Engine),
        "order" => Ok(Grouping::Order),
        other => Err(UsageError(format!(
            "argument --group-outputs: invalid choice: '{other}' (choose from 'engine', 'order', 'type')"
        ))),
    }
}

/// `--progress-after`'s value parser.
fn seconds(value: &str) -> Result<f64, UsageError> {
    value.parse::<f64>().map_err(|_| {
        UsageError(format!(
            "argument --progress-after: invalid float value: '{value}'"
        ))
    })
}

/// `--timeout`'s value parser: seconds, 0 for no limit. A negative or non-finite limit would
/// interrupt at once or never, which is not what anyone typing a number means.
fn timeout_seconds(value: &str) -> Result<f64, UsageError> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds),
        Ok(_) => Err(UsageError(format!(
            "argument --timeout: '{value}' is not a number of seconds (use a positive number, or 0 for no limit)"
        ))),
        Err(_) => Err(UsageError(format!(
            "argument --timeout: invalid float value: '{value}'"
        ))),
    }
}

/// `SIGINT`, `INT`, `2` or `0` (no signal).
pub fn signal_number(value: &str) -> Result<i32, UsageError> {
    let name = value.trim().to_ascii_uppercase();
    if let Ok(n) = name.parse::<i32>() {
        if (0..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let number = match name {
        "INT" => 2,
        "TERM" => 15,
        "KILL" => 9,
        "QUIT" => 3,
        "HUP" => 1,
        "USR1" => 10,
        "USR2" => 12,
        _ => {
            return Err(UsageError(format!(
                "argument --signal-on-interrupt: invalid signal '{value}' (use a name like SIGINT, a number, or 0 for none)"
            )))
        }
    };
    Ok(number)
}

/// `-o/--out NAME`'s value parser: a variable the result is stored in.
pub(super) fn out_name(value: &str) -> Result<String, UsageError> {
    identifier(value, "-o/--out")
}

/// The exec options. Of each pair (`-b`/`-a`, `--stream`/`--no-stream`, ...) the one given last
/// wins, as with argparse's `store_true`/`store_false` on one destination.
#[derive(Args)]
pub(super) struct ExecArgs {
    #[arg(short, long, value_parser = targets::parse)]
    targets: Option<Targets>,
    #[arg(short, long, overrides_with = "noblock")]
    block: bool,
    #[arg(short = 'a', long)]
    noblock: bool,
    #[arg(long, overrides_with = "no_stream")]
    stream: bool,
    #[arg(long)]
    no_stream: bool,
    #[arg(long, overrides_with = "no_verbose")]
    verbose: bool,
    #[arg(long)]
    no_verbose: bool,
    #[arg(long, value_parser = seconds)]
    progress_after: Option<f64>,
    #[arg(long, value_parser = signal_number)]
    signal_on_interrupt: Option<i32>,
    #[arg(long, value_parser = timeout_seconds)]
    timeout: Option<f64>,
}

impl From<ExecArgs> for ExecOptions {
    fn from(args: ExecArgs) -> Self {
        ExecOptions {
            targets: args.targets,
            block: either(args.block, args.noblock),
            stream: either(args.stream, args.no_stream),
            verbose: either(args.verbose, args.no_verbose),
            progress_after: args.progress_after,
            signal_on_interrupt: args.signal_on_interrupt,
            timeout: args.timeout,
        }
    }
}

/// A flag pair as one setting: at most one of them is left once the last has won.
fn either(on: bool, off: bool) -> Option<bool> {
    (on || off).then_some(on)
}

/// The output options; `-e` and `-r` are `--group-outputs engine` and `--group-outputs order`,
/// and the last of the three given wins.
#[derive(Args)]
pub(super) struct OutputArgs {
    #[arg(long, value_parser = grouping, overrides_with_all = ["by_engine", "by_order"])]
    group_outputs: Option<Grouping>,
    #[arg(short = 'e', overrides_with = "by_order")]
    by_engine: bool,
    #[arg(short = 'r')]
    by_order: bool,
    #[arg(short, long, value_parser = out_name)]
    pub(super) out: Option<String>,
}

impl OutputArgs {
    /// The grouping asked for, if any.
    pub(super) fn grouping(&self) -> Option<Grouping> {
        self.group_outputs
            .or(self.by_engine.then_some(Grouping::Engine))
            .or(self.by_order.then_some(Grouping::Order))
    }
}
