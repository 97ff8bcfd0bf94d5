//! The options several magics share: where and how a cell runs (`-t`, `--block`, `--stream`,
//! `--verbose`, `--progress-after`, `--signal-on-interrupt`), and how its outputs are shown
//! (`--group-outputs`, `-o`).

use super::{identifier, Args, UsageError};
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
}

pub(super) fn grouping(value: &str) -> Result<Grouping, UsageError> {
    match value {
        "type" => Ok(Grouping::Type),
        "engine" => Ok(Grouping::Engine),
        "order" => Ok(Grouping::Order),
        other => Err(UsageError(format!(
            "argument --group-outputs: invalid choice: '{other}' (choose from 'engine', 'order', 'type')"
        ))),
    }
}

pub(super) fn seconds(value: &str) -> Result<f64, UsageError> {
    value.parse::<f64>().map_err(|_| {
        UsageError(format!(
            "argument --progress-after: invalid float value: '{value}'"
        ))
    })
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

/// Handles an option shared by `%%px` and `%pxconfig`; `false` if `name` is not one of them.
pub(super) fn exec_option(
    name: &str,
    inline: Option<&str>,
    args: &mut Args,
    options: &mut ExecOptions,
) -> Result<bool, UsageError> {
    let mut value = |display: &str| -> Result<String, UsageError> {
        match inline {
            Some(v) => Ok(v.to_owned()),
            None => args.value(display).map(str::to_owned),
        }
    };
    match name {
        "-t" | "--targets" => {
            let text = value("-t/--targets")?;
            options.targets = Some(targets::parse(&text).map_err(|e| UsageError(e.0))?);
        }
        "-b" | "--block" => options.block = Some(true),
        "-a" | "--noblock" => options.block = Some(false),
        "--stream" => options.stream = Some(true),
        "--no-stream" => options.stream = Some(false),
        "--verbose" => options.verbose = Some(true),
        "--no-verbose" => options.verbose = Some(false),
        "--progress-after" => options.progress_after = Some(seconds(&value("--progress-after")?)?),
        "--signal-on-interrupt" => {
            options.signal_on_interrupt = Some(signal_number(&value("--signal-on-interrupt")?)?)
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Handles an output option shared by `%%px` and `%pxresult` (`--group-outputs`, `-e`, `-r`,
/// `-o/--out`); `false` if `name` is not one of them.
pub(super) fn output_option(
    name: &str,
    inline: Option<&str>,
    args: &mut Args,
    group_outputs: &mut Option<Grouping>,
    out: &mut Option<String>,
) -> Result<bool, UsageError> {
    match name {
        "--group-outputs" => {
            let value = match inline {
                Some(v) => v,
                None => args.value("--group-outputs")?,
            };
            *group_outputs = Some(grouping(value)?);
        }
        "-e" => *group_outputs = Some(Grouping::Engine),
        "-r" => *group_outputs = Some(Grouping::Order),
        "-o" | "--out" => {
            let value = match inline {
                Some(v) => v,
                None => args.value("-o/--out")?,
            };
            *out = Some(identifier(value, "-o/--out")?);
        }
        _ => return Ok(false),
    }
    Ok(true)
}
