//! `%pxresult [NAME] [--group-outputs G] [-o NAME] [--status]`.

use clap::Args;

use super::identifier;
use super::options::{Grouping, OutputArgs};

/// `%pxresult [NAME] [--group-outputs G] [-o NAME] [--status]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultOptions {
    pub name: Option<String>,
    pub group_outputs: Option<Grouping>,
    pub out: Option<String>,
    pub status: bool,
}

/// `%pxresult`'s arguments: the output group, a result's name and `--status`.
#[derive(Args)]
pub(super) struct ResultArgs {
    #[arg(value_parser = |name: &str| identifier(name, "NAME"))]
    name: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
    #[arg(long)]
    status: bool,
}

impl From<ResultArgs> for ResultOptions {
    fn from(args: ResultArgs) -> Self {
        ResultOptions {
            name: args.name,
            group_outputs: args.output.grouping(),
            out: args.output.out,
            status: args.status,
        }
    }
}
