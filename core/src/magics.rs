//! The magic-line parser: a cell in, a magic with its options (or a usage error) out.
//!
//! Pure: no engine is consulted, so bad input fails before anything is sent. Options and error
//! texts follow ipyparallel's argparse-based magics, which is what our users know.

use std::fmt;

use crate::launch_options::{self, LaunchOptions};
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

/// A usage error: the text after `UsageError: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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

/// Options of `%%px` (and of `%pxresult` for the output part).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PxOptions {
    pub exec: ExecOptions,
    pub group_outputs: Option<Grouping>,
    pub out: Option<String>,
    /// Also run the cell in the kernel's own context.
    pub local: bool,
}

/// `%pxresult [NAME] [--group-outputs G] [-o NAME] [--status]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultOptions {
    pub name: Option<String>,
    pub group_outputs: Option<Grouping>,
    pub out: Option<String>,
    pub status: bool,
}

/// `%engines …`.
#[derive(Debug, Clone, PartialEq)]
pub enum EnginesCommand {
    List,
    /// `start [-n N] [--launcher NAME] [--hosts H:N,...] [--engine PATH] [--launcher-arg A]...
    /// [--engine-arg A]... [--print]`; `print` shows the commands instead of running them.
    Start {
        n: Option<u32>,
        launch: LaunchOptions,
        print: bool,
    },
    Stop {
        ids: Option<Vec<u32>>,
    },
    Restart {
        ids: Vec<u32>,
    },
}

/// Which way a data magic moves values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// `%push NAMES`: local variables copied to every target.
    Push,
    /// `%pull NAME`: one value per target back into a local variable.
    Pull,
    /// `%scatter NAME`: a local `Vec` split into one contiguous chunk per target.
    Scatter,
    /// `%gather NAME`: the targets' chunks concatenated back into a local `Vec`.
    Gather,
}

impl TransferKind {
    pub fn magic(self) -> &'static str {
        match self {
            TransferKind::Push => "%push",
            TransferKind::Pull => "%pull",
            TransferKind::Scatter => "%scatter",
            TransferKind::Gather => "%gather",
        }
    }
}

/// `%push NAMES [-t T]`, `%pull NAME [-t T] [-o LOCAL]`, `%scatter NAME [-t T]`,
/// `%gather NAME [-t T] [-o LOCAL]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub kind: TransferKind,
    pub names: Vec<String>,
    pub targets: Option<Targets>,
    /// The local variable that receives a pull or gather (default: the same name).
    pub out: Option<String>,
}

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

/// A recognised magic.
#[derive(Debug, Clone, PartialEq)]
pub enum Magic {
    Px { options: PxOptions, code: String },
    PxResult(ResultOptions),
    PxConfig(ExecOptions),
    AutoPx,
    Engines(EnginesCommand),
    Transfer(Transfer),
    Map(MapOptions),
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
            options: parse_px_options(&split_args(args)?)?,
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
        "pxresult" => Magic::PxResult(parse_result_options(&split_args(args)?)?),
        "pxconfig" => Magic::PxConfig(parse_config_options(&split_args(args)?)?),
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

/// Splits like a shell: whitespace separates, single or double quotes group.
fn split_args(args: &str) -> Result<Vec<String>, UsageError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut has_token = false;
    for c in args.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                has_token = true;
            }
            None if c.is_whitespace() => {
                if has_token {
                    out.push(std::mem::take(&mut current));
                    has_token = false;
                }
            }
            None => {
                current.push(c);
                has_token = true;
            }
        }
    }
    if quote.is_some() {
        return Err(UsageError(
            "unterminated quote in the magic's arguments".into(),
        ));
    }
    if has_token {
        out.push(current);
    }
    Ok(out)
}

/// Walks the arguments, handing each option and its value (if it takes one) to `accept`.
struct Args<'a> {
    items: &'a [String],
    index: usize,
}

impl<'a> Args<'a> {
    fn new(items: &'a [String]) -> Self {
        Args { items, index: 0 }
    }

    fn next(&mut self) -> Option<&'a str> {
        let item = self.items.get(self.index)?;
        self.index += 1;
        Some(item)
    }

    /// The next argument whatever it looks like (`--launcher-arg -i`).
    fn raw_value(&mut self, display: &str) -> Result<&'a str, UsageError> {
        let item = self
            .items
            .get(self.index)
            .ok_or_else(|| UsageError(format!("argument {display}: expected one argument")))?;
        self.index += 1;
        Ok(item)
    }

    /// The value of `display` (e.g. `-t/--targets`): the next argument.
    fn value(&mut self, display: &str) -> Result<&'a str, UsageError> {
        match self.items.get(self.index) {
            Some(v) if !(v.starts_with('-') && v.len() > 1 && v.parse::<f64>().is_err()) => {
                self.index += 1;
                Ok(v)
            }
            _ => Err(UsageError(format!(
                "argument {display}: expected one argument"
            ))),
        }
    }
}

/// Splits `--name=value` into its two parts.
fn split_equals(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((name, value)) if name.starts_with("--") => (name, Some(value)),
        _ => (arg, None),
    }
}

fn grouping(value: &str) -> Result<Grouping, UsageError> {
    match value {
        "type" => Ok(Grouping::Type),
        "engine" => Ok(Grouping::Engine),
        "order" => Ok(Grouping::Order),
        other => Err(UsageError(format!(
            "argument --group-outputs: invalid choice: '{other}' (choose from 'engine', 'order', 'type')"
        ))),
    }
}

fn seconds(value: &str) -> Result<f64, UsageError> {
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
fn exec_option(
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
fn output_option(
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

fn unrecognized(arg: &str) -> UsageError {
    UsageError(format!("unrecognized arguments: {arg}"))
}

fn parse_px_options(items: &[String]) -> Result<PxOptions, UsageError> {
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

fn parse_config_options(items: &[String]) -> Result<ExecOptions, UsageError> {
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

fn parse_result_options(items: &[String]) -> Result<ResultOptions, UsageError> {
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

fn parse_transfer(kind: TransferKind, items: &[String]) -> Result<Transfer, UsageError> {
    let magic = kind.magic();
    let mut transfer = Transfer {
        kind,
        names: Vec::new(),
        targets: None,
        out: None,
    };
    let mut args = Args::new(items);
    while let Some(arg) = args.next() {
        let (name, inline) = split_equals(arg);
        match name {
            "-t" | "--targets" => {
                let value = match inline {
                    Some(value) => value,
                    None => args.value("-t/--targets")?,
                };
                transfer.targets = Some(targets::parse(value).map_err(|e| UsageError(e.0))?);
            }
            "-o" | "--out" if matches!(kind, TransferKind::Pull | TransferKind::Gather) => {
                let value = match inline {
                    Some(value) => value,
                    None => args.value("-o/--out")?,
                };
                transfer.out = Some(identifier(value, "-o/--out")?);
            }
            positional if !positional.starts_with('-') => {
                for part in positional.split(',').filter(|p| !p.is_empty()) {
                    transfer.names.push(identifier(part, "NAME")?);
                }
            }
            _ => return Err(unrecognized(arg)),
        }
    }
    let usage = match kind {
        TransferKind::Push => "usage: %push NAME [NAME ...] [-t TARGETS]",
        TransferKind::Pull => "usage: %pull NAME [-t TARGETS] [-o LOCAL]",
        TransferKind::Scatter => "usage: %scatter NAME [-t TARGETS]",
        TransferKind::Gather => "usage: %gather NAME [-t TARGETS] [-o LOCAL]",
    };
    match (kind, transfer.names.len()) {
        (_, 0) => Err(UsageError(format!(
            "{magic} needs a variable name; {usage}"
        ))),
        (TransferKind::Push, _) | (_, 1) => Ok(transfer),
        _ => Err(UsageError(format!(
            "{magic} moves one variable at a time; {usage}"
        ))),
    }
}

fn parse_map(items: &[String]) -> Result<MapOptions, UsageError> {
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

fn ids(items: &[String], what: &str) -> Result<Vec<u32>, UsageError> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| UsageError(format!("%engines {what}: '{s}' is not an engine id")))
        })
        .collect()
}

/// The options of `%engines start`, shown with its usage errors.
const START_USAGE: &str = "%engines start [-n N] [--launcher local|ssh|mpi|slurm] [--hosts HOST:N,...] [--tunnel] [--engine PATH] [--launcher-arg ARG]... [--engine-arg ARG]... [--print]";

/// The most engines one `%engines start` may ask for: far beyond one machine's pool (1024 run on
/// 2 cores), well below what would exhaust the kernel building their records.
pub const MAX_ENGINES_PER_START: u32 = 65_536;

fn parse_engines_start(items: &[String]) -> Result<EnginesCommand, UsageError> {
    let mut n = None;
    let mut launch = LaunchOptions::default();
    let mut print = false;
    let mut args = Args::new(items);
    while let Some(arg) = args.next() {
        let (name, inline) = split_equals(arg);
        let mut value = |display: &str| -> Result<String, UsageError> {
            match inline {
                Some(v) => Ok(v.to_owned()),
                None => args.value(display).map(str::to_owned),
            }
        };
        match name {
            "-n" | "--n" => {
                let v = value("-n")?;
                let count: u32 = v
                    .parse()
                    .map_err(|_| UsageError(format!("argument -n: invalid int value: '{v}'")))?;
                if count == 0 {
                    return Err(UsageError("argument -n: start at least 1 engine".into()));
                }
                if count > MAX_ENGINES_PER_START {
                    return Err(UsageError(format!(
                        "argument -n: {count} engines is more than one start may ask for ({MAX_ENGINES_PER_START}); start them in several steps"
                    )));
                }
                n = Some(count);
            }
            "--launcher" => launch.launcher = Some(value("--launcher")?),
            "--hosts" => {
                launch.hosts = launch_options::parse_hosts(&value("--hosts")?)
                    .map_err(|e| UsageError(e.to_string()))?;
            }
            "--engine" => launch.engine = Some(value("--engine")?),
            "--launcher-arg" | "--engine-arg" => {
                let v = match inline {
                    Some(v) => v.to_owned(),
                    None => args.raw_value(name)?.to_owned(),
                };
                if name == "--launcher-arg" {
                    launch.launcher_args.push(v);
                } else {
                    launch.engine_args.push(v);
                }
            }
            "--print" => print = true,
            "--tunnel" => launch.tunnel = true,
            _ => return Err(UsageError(format!("unrecognized arguments: {arg}"))),
        }
    }
    if n.is_some() && !launch.hosts.is_empty() {
        return Err(UsageError(
            "-n and --hosts both count engines: give the counts in --hosts HOST:N only".into(),
        ));
    }
    launch.check().map_err(|e| UsageError(e.0))?;
    Ok(EnginesCommand::Start { n, launch, print })
}

fn parse_engines(items: &[String]) -> Result<EnginesCommand, UsageError> {
    let usage = "usage: %engines [list] | start [-n N] | stop [IDS] | restart IDS";
    match items.first().map(String::as_str) {
        None | Some("list") if items.len() <= 1 => Ok(EnginesCommand::List),
        Some("start") => parse_engines_start(&items[1..])
            .map_err(|UsageError(text)| UsageError(format!("{text}\n{usage}\n{START_USAGE}"))),
        Some("stop") => {
            let rest = &items[1..];
            Ok(EnginesCommand::Stop {
                ids: if rest.is_empty() || rest == ["all"] {
                    None
                } else {
                    Some(ids(rest, "stop")?)
                },
            })
        }
        Some("restart") => {
            let ids = ids(&items[1..], "restart")?;
            if ids.is_empty() {
                return Err(UsageError(format!(
                    "%engines restart needs engine ids\n{usage}"
                )));
            }
            Ok(EnginesCommand::Restart { ids })
        }
        _ => Err(UsageError(format!(
            "unrecognized arguments: {}\n{usage}",
            items.join(" ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The usage error `cell` must give.
    fn usage(cell: &str) -> String {
        parse_cell(cell).expect_err(cell).0
    }

    fn px(cell: &str) -> PxOptions {
        match parse_cell(cell).unwrap().unwrap() {
            Magic::Px { options, .. } => options,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_rust_is_not_a_magic() {
        assert_eq!(parse_cell("let x = 1;").unwrap(), None);
        assert_eq!(parse_cell(":dep rand").unwrap(), None);
    }

    #[test]
    fn line_px_takes_the_whole_line_as_code() {
        let magic = parse_cell("%px let a = -t;").unwrap().unwrap();
        assert_eq!(
            magic,
            Magic::Px {
                options: PxOptions::default(),
                code: "let a = -t;".into()
            }
        );
        assert!(parse_cell("%px").is_err());
    }

    #[test]
    fn cell_px_options() {
        let o = px("%%px -t 0,1 -a --no-stream -e -o res --progress-after 0 --signal-on-interrupt SIGTERM\ncode");
        assert_eq!(o.exec.targets, Some(Targets::List(vec![0, 1])));
        assert_eq!(o.exec.block, Some(false));
        assert_eq!(o.exec.stream, Some(false));
        assert_eq!(o.group_outputs, Some(Grouping::Engine));
        assert_eq!(o.out.as_deref(), Some("res"));
        assert_eq!(o.exec.progress_after, Some(0.0));
        assert_eq!(o.exec.signal_on_interrupt, Some(15));
        assert_eq!(
            px("%%px --targets=::2\nx")
                .exec
                .targets
                .unwrap()
                .to_string(),
            "::2"
        );
        assert_eq!(
            px("%%px --progress-after -1\nx").exec.progress_after,
            Some(-1.0)
        );
        assert_eq!(
            px("%%px -r --local --verbose\nx").group_outputs,
            Some(Grouping::Order)
        );
    }

    #[test]
    fn usage_errors_name_the_option_and_the_choices() {
        assert_eq!(
            usage("%%px --group-outputs bogus\nx"),
            "argument --group-outputs: invalid choice: 'bogus' (choose from 'engine', 'order', 'type')"
        );
        assert_eq!(
            usage("%%px -t\nx"),
            "argument -t/--targets: expected one argument"
        );
        assert_eq!(usage("%%px --bogus\nx"), "unrecognized arguments: --bogus");
        assert!(usage("%px %%px\n").contains("is a magic"));
        assert!(usage("%%px -t 0\n\n  %pxresult").contains("`%pxresult` is a magic"));
        assert!(usage("%%px --signal-on-interrupt SIGFOO\nx").contains("--signal-on-interrupt"));
        assert!(usage("%nosuchmagic").contains("not found"));
        assert!(usage("%%px --progress-after soon\nx").contains("invalid float"));
    }

    #[test]
    fn data_magics_and_pxmap_take_names_targets_and_their_options() {
        let map =
            parse_cell("%pxmap square xs -o ys --chunksize=10 --errors-in-place -t 0,1").unwrap();
        assert_eq!(
            map,
            Some(Magic::Map(MapOptions {
                function: "square".into(),
                input: "xs".into(),
                out: Some("ys".into()),
                chunk_size: Some(10),
                errors_in_place: true,
                targets: Some(targets::parse("0,1").unwrap()),
                noblock: false,
            }))
        );
        assert!(usage("%pxmap f").contains("takes a function and a local Vec"));
        assert!(usage("%pxmap a-b xs").contains("not a function name"));
        assert!(usage("%pxmap f xs --chunksize 0").contains("positive"));
        assert!(parse_cell("%pxmap m::f xs").is_ok());
        let push = parse_cell("%push a b,c -t 0,1").unwrap();
        assert_eq!(
            push,
            Some(Magic::Transfer(Transfer {
                kind: TransferKind::Push,
                names: vec!["a".into(), "b".into(), "c".into()],
                targets: Some(targets::parse("0,1").unwrap()),
                out: None,
            }))
        );
        let Some(Magic::Transfer(pull)) = parse_cell("%pull x -o xs").unwrap() else {
            panic!("not a transfer");
        };
        assert_eq!(
            (pull.kind, pull.out.as_deref()),
            (TransferKind::Pull, Some("xs"))
        );
        assert!(usage("%push").contains("needs a variable name"));
        assert!(usage("%pull a b").contains("one variable at a time"));
        assert!(usage("%scatter x -o y").contains("unrecognized"));
        assert!(usage("%gather 1x").contains("not a valid name"));
    }

    #[test]
    fn pxresult_pxconfig_autopx_engines() {
        assert_eq!(
            parse_cell("%pxresult res -e --status").unwrap().unwrap(),
            Magic::PxResult(ResultOptions {
                name: Some("res".into()),
                group_outputs: Some(Grouping::Engine),
                out: None,
                status: true
            })
        );
        let Magic::PxConfig(c) = parse_cell("%pxconfig -t all --no-stream --progress-after 5")
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c.targets, Some(Targets::All));
        assert_eq!(c.stream, Some(false));
        assert!(parse_cell("%pxconfig --local").is_err());
        assert_eq!(parse_cell("%autopx").unwrap().unwrap(), Magic::AutoPx);
        assert_eq!(
            parse_cell("%engines").unwrap().unwrap(),
            Magic::Engines(EnginesCommand::List)
        );
        assert_eq!(
            parse_cell("%engines start -n 3").unwrap().unwrap(),
            Magic::Engines(EnginesCommand::Start {
                n: Some(3),
                launch: LaunchOptions::default(),
                print: false
            })
        );
        assert_eq!(
            parse_cell("%engines stop 1,2").unwrap().unwrap(),
            Magic::Engines(EnginesCommand::Stop {
                ids: Some(vec![1, 2])
            })
        );
        assert_eq!(
            parse_cell("%engines restart 2").unwrap().unwrap(),
            Magic::Engines(EnginesCommand::Restart { ids: vec![2] })
        );
        assert!(parse_cell("%engines restart").is_err());
        assert!(parse_cell("%engines start -n 0").is_err());
    }

    #[test]
    fn engines_start_takes_a_launcher_and_its_options() {
        let parsed = parse_cell(
            "%engines start --launcher ssh --hosts 10.0.0.2:2,b --launcher-arg -i --launcher-arg '/k/id key' --engine /opt/e --print",
        )
        .unwrap()
        .unwrap();
        let Magic::Engines(EnginesCommand::Start { n, launch, print }) = parsed else {
            panic!("not a start: {parsed:?}");
        };
        assert_eq!(n, None);
        assert!(print);
        assert_eq!(launch.launcher.as_deref(), Some("ssh"));
        assert_eq!(launch.hosts, vec![("10.0.0.2".into(), 2), ("b".into(), 1)]);
        assert_eq!(launch.launcher_args, vec!["-i", "/k/id key"]);
        assert_eq!(launch.engine.as_deref(), Some("/opt/e"));
        let unknown = parse_cell("%engines start --launcher pbs")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown launcher 'pbs'"), "{unknown}");
        let both = parse_cell("%engines start -n 2 --launcher ssh --hosts a:2")
            .unwrap_err()
            .to_string();
        assert!(both.contains("--hosts HOST:N only"), "{both}");
        let no_hosts = parse_cell("%engines start --launcher ssh")
            .unwrap_err()
            .to_string();
        assert!(no_hosts.contains("needs --hosts"), "{no_hosts}");
    }

    #[test]
    fn quoting_groups_arguments() {
        assert_eq!(split_args("a 'b c' \"d\"").unwrap(), vec!["a", "b c", "d"]);
        assert!(split_args("'open").is_err());
    }
}
