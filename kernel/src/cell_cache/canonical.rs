//! One order for what evcxr writes in a random one, so that a restarted kernel's cell finds the
//! entry its previous run stored.
//!
//! evcxr keeps a context's items, extern crates, crate attributes and variables in `HashMap`s
//! and writes them into each cell's crate in the maps' iteration order, which a new process
//! seeds afresh. So the same cell, after the same cells, is written in another order by every
//! kernel:
//! a cell with two variables matched its stored entry half the time, one with six items almost
//! never. The wrapper therefore hands rustc the source in a canonical order, and the key is
//! taken of that: rustc's input and the key's stay byte for byte the same thing.
//!
//! Only orders that mean nothing to the compiler, or that evcxr already leaves to chance, are
//! changed:
//! - the crate attributes (`#![...]`) the user's cells added, after evcxr's own first one, sorted
//!   by their text, when each is on a line of its own;
//! - the crate's top-level items before evcxr's own (its error type, runtime module and the
//!   cell's function), sorted by their text, unless one of them is, holds or imports a macro
//!   definition or is a macro call (macros depend on the text before them), or an item shares a
//!   line with another;
//! - the runs of `check_variable`, `take_variable` and `put_variable` lines evcxr writes around
//!   the user's code, one line per variable, when each line of a run is about another variable.
//!
//! Whole lines move, so every line of the canonical text comes from one line of evcxr's: rustc's
//! diagnostics are put back into evcxr's numbering ([`Canonical::restore_lines`]) before evcxr
//! reads them to point at the user's code. Source that does not parse is left as it is.

use ra_ap_syntax::ast::{HasAttrs, HasModuleItem, HasName};
use ra_ap_syntax::{ast, AstNode, Edition, SourceFile};
use serde_json::Value;

const CHECK_PREFIX: &str = "vars_ok &= evcxr_variable_store.check_variable::<";
const TAKE_MARK: &str = " = evcxr_variable_store.take_variable::<";
const PUT_PREFIX: &str = "evcxr_variable_store.put_variable::<";
/// The crate attribute evcxr writes first, before the user's.
const EVCXR_ATTRIBUTE: &str = "#![allow(unused_imports, unused_mut, dead_code)]";
/// evcxr's module for the variable store; it and what follows are never moved.
const RUNTIME_MODULE: &str = "evcxr_internal_runtime";
/// The type evcxr adds once a context has seen `?` in a cell, after the items, behind a blank
/// line.
const ERROR_TYPE: &str = "EvcxrUserCodeError";
/// The prefix of the cell's own function.
const CELL_FN_PREFIX: &str = "run_user_code_";

/// A cell's source in canonical order and where each of its lines came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub text: String,
    /// For each line of `text`, the index of the line of the original it is.
    from: Vec<usize>,
}

impl Canonical {
    /// Whether the canonical text is the original.
    pub fn unchanged(&self) -> bool {
        self.from.iter().enumerate().all(|(i, &j)| i == j)
    }

    /// The original's 1-based line number for a canonical one (others pass unchanged).
    fn original_line(&self, line: u64) -> u64 {
        usize::try_from(line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|i| self.from.get(i))
            .map_or(line, |&j| j as u64 + 1)
    }

    /// rustc's JSON diagnostics (one per line) with every span in `file` numbered as in the
    /// original; lines that are not JSON pass unchanged.
    pub fn restore_lines(&self, stderr: &str, file: &str) -> String {
        if self.unchanged() {
            return stderr.to_owned();
        }
        let mut out = String::with_capacity(stderr.len());
        for line in stderr.split_inclusive('\n') {
            let body = line.trim_end_matches('\n');
            match serde_json::from_str::<Value>(body) {
                Ok(mut value) if value.is_object() => {
                    self.renumber(&mut value, file);
                    out.push_str(&value.to_string());
                    out.push_str(&line[body.len()..]);
                }
                _ => out.push_str(line),
            }
        }
        out
    }

    fn renumber(&self, value: &mut Value, file: &str) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|v| self.renumber(v, file)),
            Value::Object(map) => {
                if map.get("file_name").and_then(Value::as_str) == Some(file) {
                    for field in ["line_start", "line_end"] {
                        if let Some(line) = map.get(field).and_then(Value::as_u64) {
                            map.insert(field.to_owned(), self.original_line(line).into());
                        }
                    }
                }
                map.values_mut().for_each(|v| self.renumber(v, file));
            }
            _ => {}
        }
    }
}

/// `source` in canonical order (see the module's documentation).
pub fn canonical(source: &str) -> Canonical {
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let mut order: Vec<usize> = (0..lines.len()).collect();
    let parse = SourceFile::parse(source, Edition::Edition2024);
    if parse.errors().is_empty() {
        let lines_of = LineIndex::new(&lines);
        if let Some(run) = user_attributes(&parse.tree(), source, &lines_of) {
            order[run].sort_by_key(|&i| lines[i]);
        }
        if let Some(units) = movable_items(&parse.tree(), source, &lines_of) {
            sort_units(&mut order, &units, &lines);
        }
        for run in variable_runs(&lines) {
            let mut sorted = order[run.clone()].to_vec();
            sorted.sort_by_key(|&i| lines[i]);
            order[run].copy_from_slice(&sorted);
        }
    }
    Canonical {
        text: order.iter().map(|&i| lines[i]).collect(),
        from: order,
    }
}

/// Where each line of a source starts.
struct LineIndex {
    /// The offset of each line's start, and the source's length last.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(lines: &[&str]) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(lines.iter().scan(0, |at, line| {
                *at += line.len();
                Some(*at)
            }))
            .collect();
        LineIndex { starts }
    }

    /// The index of the line holding byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset) - 1
    }

    /// The lines `node` spans, if nothing else shares them.
    fn alone(
        &self,
        source: &str,
        node: &ra_ap_syntax::SyntaxNode,
    ) -> Option<std::ops::Range<usize>> {
        let range = node.text_range();
        let (start, end) = (usize::from(range.start()), usize::from(range.end()));
        let (first, last) = (self.line_of(start), self.line_of(end.checked_sub(1)?));
        let alone = source[self.starts[first]..start].trim().is_empty()
            && source[end..self.starts[last + 1]].trim().is_empty();
        alone.then_some(first..last + 1)
    }
}

/// The lines of the crate attributes the user's cells added, if they may be sorted: after
/// evcxr's own first one, one per line, on consecutive lines.
fn user_attributes(
    file: &SourceFile,
    source: &str,
    lines: &LineIndex,
) -> Option<std::ops::Range<usize>> {
    let mut attributes = file.attrs().filter(|attr| attr.excl_token().is_some());
    let first = attributes.next()?;
    if first.syntax().text() != EVCXR_ATTRIBUTE {
        return None;
    }
    let mut run = lines.alone(source, first.syntax())?;
    run.start = run.end;
    for attribute in attributes {
        let own = lines.alone(source, attribute.syntax())?;
        if own.start != run.end || own.len() != 1 {
            return None;
        }
        run.end = own.end;
    }
    (run.len() > 1).then_some(run)
}

/// The line ranges of the top-level items that may be sorted, if they may: consecutive, each
/// on lines of its own, none a macro.
fn movable_items(
    file: &SourceFile,
    source: &str,
    lines: &LineIndex,
) -> Option<Vec<std::ops::Range<usize>>> {
    let mut units = Vec::new();
    for item in file.items() {
        if is_fixed(&item) {
            break;
        }
        let text = item.syntax().text().to_string();
        let macros = matches!(item, ast::Item::MacroRules(_) | ast::Item::MacroCall(_))
            || text.contains("macro_rules!")
            || text.contains("macro_use");
        if macros {
            return None;
        }
        let own = lines.alone(source, item.syntax())?;
        let follows = units
            .last()
            .is_none_or(|prev: &std::ops::Range<usize>| prev.end == own.start);
        if !follows {
            return None;
        }
        units.push(own);
    }
    Some(units)
}

/// evcxr's error type (for cells with `?`), its runtime module and the cell's function: they
/// and what follows stay in place.
fn is_fixed(item: &ast::Item) -> bool {
    match item {
        ast::Item::Struct(error_type) => error_type.name().is_some_and(|n| n.text() == ERROR_TYPE),
        ast::Item::Module(module) => module.name().is_some_and(|n| n.text() == RUNTIME_MODULE),
        ast::Item::Fn(function) => function
            .name()
            .is_some_and(|n| n.text().starts_with(CELL_FN_PREFIX)),
        _ => false,
    }
}

/// Puts the units' lines, which tile one stretch of `order`, in the order of the units' text.
fn sort_units(order: &mut [usize], units: &[std::ops::Range<usize>], lines: &[&str]) {
    let (Some(first), Some(last)) = (units.first(), units.last()) else {
        return;
    };
    let text = |unit: &std::ops::Range<usize>| lines[unit.clone()].concat();
    let mut sorted = units.to_vec();
    sorted.sort_by_cached_key(text);
    let reordered: Vec<usize> = sorted.into_iter().flatten().collect();
    order[first.start..last.end].copy_from_slice(&reordered);
}

/// The runs of evcxr's variable lines: two or more consecutive checks, loads or stores (the
/// stores of the cell's new variables inside its closure, of the others after it), each run only
/// if every line is about another variable.
fn variable_runs(lines: &[&str]) -> Vec<std::ops::Range<usize>> {
    let kind = |line: &str| {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.starts_with(CHECK_PREFIX) {
            Some(VariableLine::Check)
        } else if line.starts_with("let ") && line.contains(TAKE_MARK) {
            Some(VariableLine::Take)
        } else if line.starts_with(PUT_PREFIX) {
            Some(VariableLine::Put)
        } else {
            None
        }
    };
    let mut runs = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let Some(first) = kind(lines[start]) else {
            start += 1;
            continue;
        };
        let end = (start..lines.len())
            .find(|&i| kind(lines[i]) != Some(first))
            .unwrap_or(lines.len());
        if end - start > 1 && distinct_variables(&lines[start..end]) {
            runs.push(start..end);
        }
        start = end;
    }
    runs
}

/// The three kinds of line evcxr writes per variable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum VariableLine {
    Check,
    Take,
    Put,
}

/// Whether each line names another variable (`stringify!(NAME)`), so that their order is free.
fn distinct_variables(lines: &[&str]) -> bool {
    let mut names: Vec<&str> = Vec::new();
    for line in lines {
        let Some(name) = line
            .split_once("stringify!(")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(name, _)| name)
        else {
            return false;
        };
        if names.contains(&name) {
            return false;
        }
        names.push(name);
    }
    true
}

#[cfg(test)]
mod tests;
