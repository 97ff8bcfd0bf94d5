//! `%pxconfig [options]`: the defaults later `%%px` cells start from.

use super::options::{exec_option, ExecOptions};
use super::{split_equals, unrecognized, Args, UsageError};

pub(super) fn parse_config_options(items: &[String]) -> Result<ExecOptions, UsageError> {
    let mut options = ExecOptions::default();
    let mut args = Args::new(items);
    while let Some(arg) = args.next() {
        let (name, inline) = split_equals(arg);
        if !exec_option(name, inline, &mut args, &mut options)? {
            return Err(unrecognized(arg));
        }
    }
    Ok(options)
}
