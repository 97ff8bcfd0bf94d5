//! `%pxmap FUNCTION INPUT [-o OUT] [--chunksize N] [--errors-in-place] [-a] [-t TARGETS]`.

use super::{identifier, split_equals, unrecognized, Args, UsageError};
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

pub(super) fn parse_map(items: &[String]) -> Result<MapOptions, UsageError> {
    let usage =
        "usage: %pxmap FUNCTION INPUT [-o OUT] [--chunksize N] [--errors-in-place] [-a] [-t TARGETS]";
    let mut options = MapOptions::default();
    let mut positional = Vec::new();
    let mut args = Args::new(items);
    while let Some(arg) = args.next() {
        let (name, inline) = split_equals(arg);
        let mut value = |display: &str| match inline {
            Some(value) => Ok(value),
            None => args.value(display),
        };
        match name {
            "-t" | "--targets" => {
                let text = value("-t/--targets")?;
                options.targets = Some(targets::parse(text).map_err(|e| UsageError(e.0))?);
            }
            "-o" | "--out" => options.out = Some(identifier(value("-o/--out")?, "-o/--out")?),
            "--chunksize" => {
                let text = value("--chunksize")?;
                match text.parse::<usize>() {
                    Ok(n) if n > 0 => options.chunk_size = Some(n),
                    _ => {
                        return Err(UsageError(format!(
                            "argument --chunksize: '{text}' is not a positive number of items"
                        )))
                    }
                }
            }
            "--errors-in-place" => options.errors_in_place = true,
            "-a" | "--noblock" => options.noblock = true,
            other if !other.starts_with('-') => positional.push(other.to_owned()),
            _ => return Err(unrecognized(arg)),
        }
    }
    let [function, input] = positional.as_slice() else {
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
    options.function = function.clone();
    options.input = identifier(input, "INPUT")?;
    Ok(options)
}
