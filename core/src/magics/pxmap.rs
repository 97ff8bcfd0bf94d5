//! `%pxmap FUNCTION INPUT [-o OUT] [--chunksize N] [--errors-in-place] [-a] [-t TARGETS]`.

use clap::Args;

use super::options::out_name;
use super::{argparse, identifier, UsageError};
use crate::targets::{self, Targets};

/// `%pxmap FUNCTION INPUT [-o OUT] [--chunksize N] [--errors-in-place] [-a] [-t TARGETS]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MapOptions {
    /// A function defined on the engines (a name or a path).
    pub function: String,
    /// A local `Vec` whose items are the arguments.
    pub input: String,
    pub out: Option<String>,
    pub chunk_size: Option<usize>,
    /// Keep every item's `Result` instead of failing the magic when an item panicked.
    pub errors_in_place: bool,
    pub targets: Option<Targets>,
    /// `-a`: return at once; `%pxresult` collects (and `%pxresult --status` shows progress).
    pub noblock: bool,
}

/// `%pxmap`'s arguments; FUNCTION and INPUT are checked once every option is read.
#[derive(Args)]
struct MapArgs {
    words: Vec<String>,
    #[arg(short, long, value_parser = out_name)]
    out: Option<String>,
    #[arg(long = "chunksize", value_parser = chunk_size)]
    chunk_size: Option<usize>,
    #[arg(long)]
    errors_in_place: bool,
    #[arg(short, long, value_parser = targets::parse)]
    targets: Option<Targets>,
    #[arg(short = 'a', long)]
    noblock: bool,
}

/// `--chunksize`'s value parser: a positive number of items.
fn chunk_size(text: &str) -> Result<usize, UsageError> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(UsageError(format!(
            "argument --chunksize: '{text}' is not a positive number of items"
        ))),
    }
}

pub(super) fn parse_map(items: &[String]) -> Result<MapOptions, UsageError> {
    let usage =
        "usage: %pxmap FUNCTION INPUT [-o OUT] [--chunksize N] [--errors-in-place] [-a] [-t TARGETS]";
    let args: MapArgs = argparse::parse(items)?;
    let [function, input] = args.words.as_slice() else {
        return Err(UsageError(format!(
            "%pxmap takes a function and a local Vec; {usage}"
        )));
    };
    let path_ok = function
        .split("::")
        .all(|part| identifier(part, "FUNCTION").is_ok());
    if !path_ok {
        return Err(UsageError(format!(
            "argument FUNCTION: '{function}' is not a function name or path (define the function with %%px, then name it)"
        )));
    }
    Ok(MapOptions {
        function: function.clone(),
        input: identifier(input, "INPUT")?,
        out: args.out,
        chunk_size: args.chunk_size,
        errors_in_place: args.errors_in_place,
        targets: args.targets,
        noblock: args.noblock,
    })
}
