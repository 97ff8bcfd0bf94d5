//! Compile errors rendered against the user's own cell, the way rustc would show them.
//!
//! evcxr's `rendered()` text points into the crate it generated, which the user never sees; its
//! spans, however, are already mapped back to the cell, so we draw the source lines ourselves.

use evcxr::CompilationError;

/// A rustc-style report of `error`: the headline, each spanned line of `cell` with carets under
/// the span and the label, then help notes.
pub fn render(error: &CompilationError, cell: &str) -> String {
    let lines: Vec<&str> = cell.lines().collect();
    let mut out = String::new();
    let code = error.code().map(|c| format!("[{c}]")).unwrap_or_default();
    out.push_str(&format!("{}{}: {}\n", error.level(), code, error.message()));
    for spanned in error.spanned_messages() {
        let Some(span) = spanned.span else {
            continue;
        };
        let Some(source) = lines.get(span.start_line.saturating_sub(1)) else {
            continue;
        };
        let number = span.start_line.to_string();
        let gutter = " ".repeat(number.len());
        let start = span.start_column.saturating_sub(1);
        let width = if span.end_line == span.start_line {
            span.end_column.saturating_sub(span.start_column).max(1)
        } else {
            source.chars().count().saturating_sub(start).max(1)
        };
        let marker = if spanned.is_primary { '^' } else { '-' };
        out.push_str(&format!(
            "{gutter} --> cell:{}:{}\n",
            span.start_line, span.start_column
        ));
        out.push_str(&format!("{gutter} |\n{number} | {source}\n"));
        out.push_str(&format!(
            "{gutter} | {}{} {}\n",
            " ".repeat(start),
            marker.to_string().repeat(width),
            spanned.label
        ));
    }
    for help in error.help() {
        out.push_str(&format!("  = help: {help}\n"));
    }
    if let Some(hint) = error.evcxr_extra_hint() {
        out.push_str(&format!("  = hint: {hint}\n"));
    }
    out
}
