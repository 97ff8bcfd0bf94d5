//! The data magics: `%push`, `%pull`, `%scatter`, `%gather`.

use clap::Args;

use super::options::out_name;
use super::{argparse, identifier, UsageError};
use crate::targets::{self, Targets};

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

/// `%push` and `%scatter`: names (`a b,c`) and `-t`.
#[derive(Args)]
struct SendArgs {
    /// Each word is checked as it comes, so a bad name is reported before later options.
    #[arg(value_parser = names)]
    names: Vec<Names>,
    #[arg(short, long, value_parser = targets::parse)]
    targets: Option<Targets>,
}

/// `%pull` and `%gather`: what `%push` takes, and `-o` for the local variable.
#[derive(Args)]
struct FetchArgs {
    #[command(flatten)]
    send: SendArgs,
    #[arg(short, long, value_parser = out_name)]
    out: Option<String>,
}

/// One word's variable names: `a` or `a,b`.
#[derive(Clone)]
struct Names(Vec<String>);

/// The value parser of the names.
fn names(word: &str) -> Result<Names, UsageError> {
    let names = word.split(',').filter(|part| !part.is_empty());
    names
        .map(|name| identifier(name, "NAME"))
        .collect::<Result<_, _>>()
        .map(Names)
}

pub(super) fn parse_transfer(kind: TransferKind, items: &[String]) -> Result<Transfer, UsageError> {
    let (send, out) = match kind {
        TransferKind::Push | TransferKind::Scatter => (argparse::parse::<SendArgs>(items)?, None),
        TransferKind::Pull | TransferKind::Gather => {
            let FetchArgs { send, out } = argparse::parse(items)?;
            (send, out)
        }
    };
    let names: Vec<String> = send
        .names
        .into_iter()
        .flat_map(|Names(names)| names)
        .collect();
    let magic = kind.magic();
    let usage = match kind {
        TransferKind::Push => "usage: %push NAME [NAME ...] [-t TARGETS]",
        TransferKind::Pull => "usage: %pull NAME [-t TARGETS] [-o LOCAL]",
        TransferKind::Scatter => "usage: %scatter NAME [-t TARGETS]",
        TransferKind::Gather => "usage: %gather NAME [-t TARGETS] [-o LOCAL]",
    };
    match (kind, names.len()) {
        (_, 0) => Err(UsageError(format!(
            "{magic} needs a variable name; {usage}"
        ))),
        (TransferKind::Push, _) | (_, 1) => Ok(Transfer {
            kind,
            names,
            targets: send.targets,
            out,
        }),
        _ => Err(UsageError(format!(
            "{magic} moves one variable at a time; {usage}"
        ))),
    }
}
