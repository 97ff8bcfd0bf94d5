//! The data magics: `%push`, `%pull`, `%scatter`, `%gather`.

use super::{identifier, split_equals, unrecognized, Args, UsageError};
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

pub(super) fn parse_transfer(kind: TransferKind, items: &[String]) -> Result<Transfer, UsageError> {
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
