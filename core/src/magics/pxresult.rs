//! `%pxresult [NAME] [--group-outputs G] [-o NAME] [--status]`.

use super::options::{output_option, Grouping};
use super::{identifier, split_equals, unrecognized, Args, UsageError};

/// `%pxresult [NAME] [--group-outputs G] [-o NAME] [--status]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultOptions {
    pub name: Option<String>,
    pub group_outputs: Option<Grouping>,
    pub out: Option<String>,
    pub status: bool,
}

pub(super) fn parse_result_options(items: &[String]) -> Result<ResultOptions, UsageError> {
    let mut options = ResultOptions::default();
    let mut args = Args::new(items);
    while let Some(arg) = args.next() {
        let (name, inline) = split_equals(arg);
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
            "--status" => options.status = true,
            positional if !positional.starts_with('-') && options.name.is_none() => {
                options.name = Some(identifier(positional, "NAME")?);
            }
            _ => return Err(unrecognized(arg)),
        }
    }
    Ok(options)
}
