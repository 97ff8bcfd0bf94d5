//! `%%px [options]` (and the line form `%px CODE`, which takes none).

use super::options::{exec_option, output_option, ExecOptions, Grouping};
use super::{split_equals, unrecognized, Args, UsageError};

/// Options of `%%px` (and of `%pxresult` for the output part).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PxOptions {
    pub exec: ExecOptions,
    pub group_outputs: Option<Grouping>,
    pub out: Option<String>,
    /// Also run the cell in the kernel's own context.
    pub local: bool,
}

pub(super) fn parse_px_options(items: &[String]) -> Result<PxOptions, UsageError> {
    let mut options = PxOptions::default();
    let mut args = Args::new(items);
    while let Some(arg) = args.next() {
        let (name, inline) = split_equals(arg);
        if exec_option(name, inline, &mut args, &mut options.exec)? {
            continue;
        }
        if output_option(
            name,
            inline,
            &mut args,
            &mut options.group_outputs,
            &mut options.out,
        )? {
            continue;
        }
        match name {
            "--local" => options.local = true,
            _ => return Err(unrecognized(arg)),
        }
    }
    Ok(options)
}
