//! The magic-line parser: a cell in, a magic with its options (or a usage error) out.
//!
//! Pure: no engine is consulted, so bad input fails before anything is sent. Options and error
//! texts follow ipyparallel's argparse-based magics, which is what our users know. Each magic's
//! arguments are a `#[derive(clap::Args)]` struct in its own file ([`px`], [`pxresult`],
//! [`engines`], [`transfer`] for the data magics, [`pxmap`]); the option groups `%%px`,
//! `%pxconfig` and `%pxresult` flatten in are in [`options`], as ipyparallel shares its
//! `exec_args` and `output_args`; [`argparse`] runs clap with argparse's word rules and texts.

mod argparse;
mod engines;
mod options;
mod px;
mod pxconfig;
mod pxmap;
mod pxresult;
#[cfg(test)]
mod tests;
mod transfer;

pub use engines::{EnginesCommand, MAX_ENGINES_PER_START};
pub use options::{signal_number, ExecOptions, Grouping};
pub use px::PxOptions;
pub use pxconfig::{PxConfigOptions, DEFAULT_RESTART_LIMIT, MAX_RESTART_LIMIT};
pub use pxmap::MapOptions;
pub use pxresult::ResultOptions;
pub use transfer::{Transfer, TransferKind};

use engines::parse_engines;
use px::PxArgs;
use pxconfig::PxConfigArgs;
use pxmap::parse_map;
use pxresult::ResultArgs;
use transfer::parse_transfer;

/// A usage error: the text after `UsageError: ` (an `Error` so that value parsers can return it
/// to clap, which hands it back whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A recognised magic.
#[derive(Debug, Clone, PartialEq)]
pub enum Magic {
    Px { options: PxOptions, code: String },
    PxResult(ResultOptions),
    PxConfig(PxConfigOptions),
    AutoPx,
    Engines(EnginesCommand),
    Transfer(Transfer),
    Map(MapOptions),
}

impl Magic {
    /// Whether the cell will want code compiled for engines (the px compiler's context), so a
    /// kernel that sees it queued may start that context early: `%px` and `%autopx` cells,
    /// `%pxmap`, the transfers, and `%engines start` (engines mean `%px` is coming).
    pub fn wants_engine_code(&self) -> bool {
        match self {
            Magic::Px { .. } | Magic::AutoPx | Magic::Transfer(_) | Magic::Map(_) => true,
            Magic::Engines(command) => matches!(command, EnginesCommand::Start { .. }),
            Magic::PxResult(_) | Magic::PxConfig(_) => false,
        }
    }
}

/// The magic a cell starts with; `Ok(None)` for a plain Rust cell.
pub fn parse_cell(cell: &str) -> Result<Option<Magic>, UsageError> {
    let trimmed = cell.trim_start();
    let (first, rest) = match trimmed.split_once('\n') {
        Some((first, rest)) => (first.trim_end(), rest),
        None => (trimmed.trim_end(), ""),
    };
    let Some(magic_line) = first.strip_prefix('%') else {
        return Ok(None);
    };
    let (name, args) = match magic_line.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (magic_line, ""),
    };
    let magic = match name {
        "%px" => Magic::Px {
            options: argparse::parse::<PxArgs>(&split_args(args)?)?.into(),
            code: rest.to_owned(),
        },
        "px" => {
            // Line magic: the whole line is code (and any lines after it).
            let code = if rest.is_empty() {
                args.to_owned()
            } else {
                format!("{args}\n{rest}")
            };
            if code.trim().is_empty() {
                return Err(UsageError("%px needs code to run, e.g. `%px println!(\"hi\")`".into()));
            }
            Magic::Px {
                options: PxOptions::default(),
                code,
            }
        }
        "pxresult" => Magic::PxResult(argparse::parse::<ResultArgs>(&split_args(args)?)?.into()),
        // `%pxconfig` takes the exec options and the pool's restart policy.
        "pxconfig" => {
            Magic::PxConfig(argparse::parse::<PxConfigArgs>(&split_args(args)?)?.into())
        }
        "autopx" => {
            if !args.is_empty() {
                return Err(UsageError(format!("unrecognized arguments: {args}")));
            }
            Magic::AutoPx
        }
        "engines" => Magic::Engines(parse_engines(&split_args(args)?)?),
        "pxmap" => Magic::Map(parse_map(&split_args(args)?)?),
        "push" => Magic::Transfer(parse_transfer(TransferKind::Push, &split_args(args)?)?),
        "pull" => Magic::Transfer(parse_transfer(TransferKind::Pull, &split_args(args)?)?),
        "scatter" => Magic::Transfer(parse_transfer(TransferKind::Scatter, &split_args(args)?)?),
        "gather" => Magic::Transfer(parse_transfer(TransferKind::Gather, &split_args(args)?)?),
        other => {
            return Err(UsageError(format!(
                "Line magic function `%{other}` not found. rustpx knows %px, %%px, %pxresult, %pxconfig, %autopx, %engines, %push, %pull, %scatter, %gather and %pxmap; evcxr commands start with `:` (try :help)."
            )))
        }
    };
    if let Magic::Px { code, .. } = &magic {
        reject_nested_magic(code)?;
    }
    Ok(Some(magic))
}

/// Engines run Rust, not magics: `%px %%px` or a `%%px` body that starts with `%` would only
/// reach the engines as a baffling compile error, so it is a usage error here instead.
fn reject_nested_magic(code: &str) -> Result<(), UsageError> {
    let first_line = code.lines().map(str::trim).find(|line| !line.is_empty());
    match first_line {
        Some(line) if line.starts_with('%') => Err(UsageError(format!(
            "`{line}` is a magic, and magics run in the kernel, not on the engines: %px sends Rust code. Run the magic in a cell of its own."
        ))),
        _ => Ok(()),
    }
}

/// Splits like a POSIX shell (quotes group, a backslash escapes, `#` starts a comment), as
/// IPython splits a magic's arguments.
fn split_args(args: &str) -> Result<Vec<String>, UsageError> {
    shlex::split(args).ok_or_else(|| {
        UsageError("unterminated quote (or a trailing backslash) in the magic's arguments".into())
    })
}

/// argparse's error for a word no option or positional takes.
fn unrecognized(arg: &str) -> UsageError {
    UsageError(format!("unrecognized arguments: {arg}"))
}

/// `value` if it can name a Rust variable; `display` names the argument in the error.
fn identifier(value: &str, display: &str) -> Result<String, UsageError> {
    let ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_alphanumeric() || c == '_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(UsageError(format!(
            "argument {display}: '{value}' is not a valid name (letters, digits and _)"
        )))
    }
}
