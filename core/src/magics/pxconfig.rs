//! `%pxconfig`: the exec options as defaults for later cells, and the pool's restart policy.
//!
//! `--restart-dead` belongs to the pool, not to one cell, so it is `%pxconfig`'s alone and not
//! one of the exec options `%%px` shares.

use clap::Args;

use super::options::{ExecArgs, ExecOptions};
use super::UsageError;

/// How many times `--restart-dead` without a number restarts each engine: enough to ride out
/// a few crashes in a long run, few enough that an engine dying at every start stops being
/// restarted soon.
pub const DEFAULT_RESTART_LIMIT: u32 = 3;

/// The most restarts per engine `--restart-dead N` takes: beyond it a crash loop would never end.
pub const MAX_RESTART_LIMIT: u32 = 1000;

/// What `%pxconfig` sets; `None` means "not given here".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PxConfigOptions {
    pub exec: ExecOptions,
    /// `--restart-dead [N]`: restart each engine that dies up to N times (0 turns it off).
    pub restart_dead: Option<u32>,
}

#[derive(Args)]
pub(super) struct PxConfigArgs {
    #[command(flatten)]
    exec: ExecArgs,
    /// `--restart-dead` alone is the default limit; argparse's `nargs='?'`.
    #[arg(long, num_args = 0..=1, default_missing_value = "3", value_parser = restart_limit)]
    restart_dead: Option<u32>,
}

impl From<PxConfigArgs> for PxConfigOptions {
    fn from(args: PxConfigArgs) -> Self {
        PxConfigOptions {
            exec: args.exec.into(),
            restart_dead: args.restart_dead,
        }
    }
}

/// `--restart-dead`'s value parser: a count of restarts per engine.
fn restart_limit(value: &str) -> Result<u32, UsageError> {
    match value.parse::<u32>() {
        Ok(n) if n <= MAX_RESTART_LIMIT => Ok(n),
        _ => Err(UsageError(format!(
            "argument --restart-dead: '{value}' is not a number of restarts (0 to {MAX_RESTART_LIMIT}; 0 turns restarting off, no number means {DEFAULT_RESTART_LIMIT})"
        ))),
    }
}
