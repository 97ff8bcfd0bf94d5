//! The `-t/--targets` grammar of ipyparallel, and its resolution against the live engines.
//!
//! `all` is kept symbolic and resolved at every run, so engines that joined later count; slices
//! index the sorted engine ids the way Python slices do; ids are checked before anything is sent.

use std::fmt;

use crate::EngineId;

/// Which engines a cell runs on, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    All,
    /// A Python-style slice of the sorted ids.
    Slice {
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
    },
    /// Explicit ids in the user's order (duplicates allowed).
    List(Vec<EngineId>),
    /// `-t N`: one engine; outputs drop their `[stdout:N]` headers and errors are not composite.
    Single(EngineId),
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |v: &Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        match self {
            Targets::All => write!(f, "all"),
            Targets::Slice { start, stop, step } => match step {
                Some(_) => write!(f, "{}:{}:{}", part(start), part(stop), part(step)),
                None => write!(f, "{}:{}", part(start), part(stop)),
            },
            Targets::List(ids) => {
                let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                write!(f, "[{}]", ids.join(","))
            }
            Targets::Single(id) => write!(f, "{id}"),
        }
    }
}

/// A targets string that is not in the grammar; the text is the usage error (and an `Error`, so
/// that [`parse`] can be a magic's clap value parser as it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetsError(pub String);

/// Parses a `-t` value.
pub fn parse(text: &str) -> Result<Targets, TargetsError> {
    let text = text.trim();
    let bad = || {
        TargetsError(format!(
            "argument -t/--targets: invalid targets {text:?} (use all, an id like 1, a list like 0,2 or [0,2], or a slice like ::2)"
        ))
    };
    if text.contains(':') {
        let inner = text.trim_start_matches('[').trim_end_matches(']');
        let parts: Vec<&str> = inner.split(':').collect();
        if parts.len() > 3 {
            return Err(bad());
        }
        let number = |s: &str| -> Result<Option<i64>, TargetsError> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| bad())
            }
        };
        let step = match parts.get(2) {
            Some(s) => number(s)?,
            None => None,
        };
        if step == Some(0) {
            return Err(TargetsError(
                "argument -t/--targets: slice step cannot be zero".into(),
            ));
        }
        return Ok(Targets::Slice {
            start: number(parts[0])?,
            stop: number(parts.get(1).copied().unwrap_or(""))?,
            step,
        });
    }
    if text.contains("all") {
        return Ok(Targets::All);
    }
    let bracketed = text.starts_with('[');
    let inner = text.trim_start_matches('[').trim_end_matches(']');
    let ids: Result<Vec<EngineId>, _> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<EngineId>)
        .collect();
    let ids = ids.map_err(|_| bad())?;
    match ids.as_slice() {
        [] => Err(bad()),
        [one] if !bracketed && !inner.contains(',') => Ok(Targets::Single(*one)),
        _ => Ok(Targets::List(ids)),
    }
}

/// An id the user named that is not a live engine: `IndexError: No such engine: 99`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchEngine(pub EngineId);

/// The engines `targets` names among `live` (sorted ids), in target order.
pub fn resolve(targets: &Targets, live: &[EngineId]) -> Result<Vec<EngineId>, NoSuchEngine> {
    match targets {
        Targets::All => Ok(live.to_vec()),
        Targets::Single(id) => check(&[*id], live),
        Targets::List(ids) => check(ids, live),
        Targets::Slice { start, stop, step } => Ok(slice(live, *start, *stop, *step)),
    }
}

fn check(ids: &[EngineId], live: &[EngineId]) -> Result<Vec<EngineId>, NoSuchEngine> {
    match ids.iter().find(|id| !live.contains(id)) {
        Some(missing) => Err(NoSuchEngine(*missing)),
        None => Ok(ids.to_vec()),
    }
}

/// Python's `seq[start:stop:step]`.
fn slice(
    seq: &[EngineId],
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
) -> Vec<EngineId> {
    let len = seq.len() as i64;
    let step = step.unwrap_or(1);
    let clamp = |v: i64, low: i64, high: i64| v.max(low).min(high);
    let norm = |v: i64| if v < 0 { v + len } else { v };
    let mut out = Vec::new();
    if step > 0 {
        let mut i = clamp(start.map(norm).unwrap_or(0), 0, len);
        let end = clamp(stop.map(norm).unwrap_or(len), 0, len);
        while i < end {
            out.push(seq[i as usize]);
            // Saturating: a step near i64::MAX ends the walk instead of overflowing.
            i = i.saturating_add(step);
        }
    } else {
        let mut i = clamp(start.map(norm).unwrap_or(len - 1), -1, len - 1);
        let end = clamp(stop.map(norm).unwrap_or(-1), -1, len - 1);
        while i > end {
            out.push(seq[i as usize]);
            i = i.saturating_add(step);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: [EngineId; 4] = [0, 1, 2, 3];

    fn run(text: &str) -> Vec<EngineId> {
        resolve(&parse(text).unwrap(), &LIVE).unwrap()
    }

    #[test]
    fn every_form_of_the_grammar() {
        assert_eq!(run("all"), vec![0, 1, 2, 3]);
        assert_eq!(run(":"), vec![0, 1, 2, 3]);
        assert_eq!(run("::2"), vec![0, 2]);
        assert_eq!(run("1::2"), vec![1, 3]);
        assert_eq!(run("1:3"), vec![1, 2]);
        assert_eq!(run("-2:"), vec![2, 3]);
        assert_eq!(run("::-1"), vec![3, 2, 1, 0]);
        assert_eq!(run("1"), vec![1]);
        assert_eq!(run("2,0"), vec![2, 0]);
        assert_eq!(run("[0,1]"), vec![0, 1]);
        assert_eq!(run("1,1"), vec![1, 1]);
        assert_eq!(parse("1").unwrap(), Targets::Single(1));
        assert_eq!(parse("[1]").unwrap(), Targets::List(vec![1]));
    }

    #[test]
    fn unknown_ids_fail_before_sending() {
        assert_eq!(resolve(&parse("99").unwrap(), &LIVE), Err(NoSuchEngine(99)));
        assert_eq!(resolve(&parse("0,7").unwrap(), &LIVE), Err(NoSuchEngine(7)));
    }

    #[test]
    fn bad_text_is_a_usage_error() {
        assert!(parse("x").unwrap_err().0.contains("-t/--targets"));
        assert!(parse("1:2:3:4").is_err());
        assert!(parse("::0").unwrap_err().0.contains("zero"));
        assert!(parse("").is_err());
    }

    #[test]
    fn extreme_slices_end_instead_of_overflowing() {
        assert_eq!(run("1::9223372036854775807"), vec![1]);
        assert_eq!(run("::-9223372036854775808"), vec![3]);
        assert_eq!(
            run("-9223372036854775808:9223372036854775807"),
            vec![0, 1, 2, 3]
        );
        assert_eq!(run("9223372036854775807::-1"), vec![3, 2, 1, 0]);
    }

    #[test]
    fn all_follows_the_live_set() {
        assert_eq!(resolve(&Targets::All, &[0, 1, 2, 3, 4]).unwrap().len(), 5);
    }
}
