//! `%%px [options]` (and the line form `%px CODE`, which takes none).

use clap::Args;

use super::options::{ExecArgs, ExecOptions, Grouping, OutputArgs};

/// Options of `%%px` (and of `%pxresult` for the output part).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PxOptions {
    pub exec: ExecOptions,
    pub group_outputs: Option<Grouping>,
    pub out: Option<String>,
    /// Also run the cell in the kernel's own context.
    pub local: bool,
}

/// `%%px`'s arguments: both shared groups and `--local`.
#[derive(Args)]
pub(super) struct PxArgs {
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[arg(long)]
    local: bool,
}

impl From<PxArgs> for PxOptions {
    fn from(args: PxArgs) -> Self {
        PxOptions {
            exec: args.exec.into(),
            group_outputs: args.output.grouping(),
            out: args.output.out,
            local: args.local,
        }
    }
}
