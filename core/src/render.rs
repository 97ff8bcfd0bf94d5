//! Task records to Jupyter outputs, in ipyparallel's exact shapes.
//!
//! Pure: records in, outputs out. The shapes are specified in
//! shared/reference/px-behaviour.md and checked by the tests below and by the integration tests.

use crate::{EngineId, MimeBundle};
use serde_json::{json, Map, Value};

use crate::magics::Grouping;
use crate::records::{CellRecord, EngineError, EngineRecord};
use crate::ErrorKind;

/// How many engine tracebacks a composite error draws.
pub const TB_LIMIT: usize = 4;

/// One output to publish, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Stream {
        name: &'static str,
        text: String,
    },
    Display {
        data: Map<String, Value>,
        metadata: Map<String, Value>,
    },
}

fn text_display(text: &str) -> Output {
    let mut data = Map::new();
    data.insert("text/plain".into(), Value::String(text.to_owned()));
    Output::Display {
        data,
        metadata: Map::new(),
    }
}

fn engine_metadata(engine: EngineId) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("engine".into(), json!(engine));
    metadata
}

fn bundle_to_data(bundle: &MimeBundle) -> Map<String, Value> {
    bundle
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// `[output:N]` before an engine's rich outputs.
pub fn output_header(engine: EngineId) -> Output {
    text_display(&format!("[output:{engine}]"))
}

/// An engine's rich display, tagged with its engine.
pub fn rich_output(engine: EngineId, bundle: &MimeBundle) -> Output {
    Output::Display {
        data: bundle_to_data(bundle),
        metadata: engine_metadata(engine),
    }
}

/// The rich MIME types JupyterLab shows instead of text/plain, in the order it prefers them (its
/// rendermime ranks: text/html 50, image/svg+xml 80, PNG and JPEG 90, text/plain 120). A value
/// with one of these would hide its `Out[N:C]` label, which is only in text/plain.
const RICH_TYPES: [&str; 4] = ["text/html", "image/svg+xml", "image/png", "image/jpeg"];

/// The label the browser shows above a value's rich content: its `Out[N:C]:` in ipyparallel's
/// red, then the content JupyterLab would have shown (the HTML itself, the SVG inline, an image
/// as a data URI). text/html outranks every other type, so this is what JupyterLab renders;
/// outputs produced while the notebook is open are trusted, so the SVG is not sanitised away.
/// `None` when the bundle has no rich type (its text/plain already shows the label).
fn labelled_html(label: &str, engine: EngineId, bundle: &MimeBundle) -> Option<String> {
    let (mime, content) = RICH_TYPES
        .iter()
        .find_map(|mime| bundle.get(*mime).map(|content| (*mime, content)))?;
    let body = match mime {
        "text/html" | "image/svg+xml" => content.clone(),
        image => {
            let base64: String = content.split_whitespace().collect();
            format!("<img src=\"data:{image};base64,{base64}\">")
        }
    };
    Some(format!(
        "<div class=\"rustpx-output\" data-rustpx-engine=\"{engine}\">\
         <div class=\"rustpx-label\" style=\"font-family:var(--jp-code-font-family,monospace);\
         font-size:var(--jp-code-font-size,13px);color:#b22b31;margin:0 0 4px 0\">{}</div>\
         {body}</div>",
        escape_html(label)
    ))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `Out[N:C]: value`, red prefix as ipyparallel draws it; other MIME types pass through, and a
/// rich value also gets a text/html that shows the `Out[N:C]:` label above it (see
/// [`labelled_html`]).
pub fn value_output(record: &EngineRecord) -> Option<Output> {
    let value = record.value.as_ref()?;
    // `()` is Rust's "no value" (Python's None, which ipyparallel does not show either).
    if value.len() == 1 && value.get("text/plain").is_some_and(|t| t == "()") {
        return None;
    }
    let mut data = bundle_to_data(value);
    let count = record.execution_count.unwrap_or(0);
    let label = format!("Out[{}:{count}]:", record.engine);
    if let Some(html) = labelled_html(&label, record.engine, value) {
        data.insert("text/html".into(), Value::String(html));
    }
    let text = value.get("text/plain").cloned().unwrap_or_default();
    let text = if text.contains('\n') && !text.starts_with('\n') {
        format!("\n{text}")
    } else {
        text
    };
    data.insert(
        "text/plain".into(),
        Value::String(format!(
            "\u{1b}[0;31mOut[{}:{count}]: \u{1b}[0m{text}",
            record.engine
        )),
    );
    Some(Output::Display {
        data,
        metadata: engine_metadata(record.engine),
    })
}

/// The text of a live stream display: `[stdout:N] ` and everything so far.
pub fn stream_display_text(engine: EngineId, name: &str, text: &str) -> String {
    format!("[{name}:{engine}] {text}")
}

/// The stderr text shown as an engine fails during a streamed run. An error shared by a group
/// (one compile) is shown once, by its first engine, labelled with all of them; the others
/// show nothing.
pub fn streamed_failure(record: &EngineRecord) -> String {
    let Some(error) = &record.error else {
        return String::new();
    };
    if error
        .shared_by
        .first()
        .is_some_and(|&first| first != record.engine)
    {
        return String::new();
    }
    let mut lines = vec![format!("[{}:execute]:", error_label(record.engine, error))];
    lines.extend(error_lines(error));
    lines.join("\n") + "\n"
}

/// Who an error belongs to: the engine, or every engine that shares it.
fn error_label(engine: EngineId, error: &EngineError) -> String {
    if error.shared_by.len() > 1 {
        engine_ranges(&error.shared_by)
    } else {
        engine.to_string()
    }
}

/// Sorted engine ids as runs, the way a person writes them: `0-31`, `0,2`, `0-3,5,7-9`.
pub fn engine_ranges(ids: &[EngineId]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(EngineId, EngineId)> = Vec::new();
    for id in sorted {
        match runs.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(id) => *end = id,
            _ => runs.push((id, id)),
        }
    }
    runs.iter()
        .map(|&(start, end)| match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn error_lines(error: &EngineError) -> Vec<String> {
    let mut lines: Vec<String> = error
        .traceback
        .iter()
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    if lines.is_empty() {
        lines.push(error.summary());
    }
    lines
}

/// Re-prints streams the way ipyparallel's `_display_stream` does: a header only when it changes,
/// a newline inserted when the previous text did not end with one.
#[derive(Default)]
struct StreamPrinter {
    outputs: Vec<Output>,
    last_prefix: String,
    trailing_newline: bool,
}

impl StreamPrinter {
    fn new() -> Self {
        StreamPrinter {
            trailing_newline: true,
            ..Default::default()
        }
    }

    fn print(&mut self, name: &'static str, text: &str, prefix: &str) {
        if text.is_empty() {
            return;
        }
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() {
            if prefix == self.last_prefix {
                prefix.clear();
            } else {
                self.last_prefix = prefix.clone();
            }
        }
        let pre = if !prefix.is_empty() && !self.trailing_newline {
            "\n"
        } else {
            ""
        };
        let sep = if prefix.is_empty() { "" } else { "\n" };
        self.trailing_newline = text.ends_with('\n');
        let chunk = format!("{pre}{prefix}{sep}{text}");
        match self.outputs.last_mut() {
            Some(Output::Stream { name: last, text }) if *last == name => text.push_str(&chunk),
            _ => self.outputs.push(Output::Stream { name, text: chunk }),
        }
    }

    fn push(&mut self, output: Output) {
        self.outputs.push(output);
    }
}

/// Everything a finished (or partly finished) cell shows when not streamed: `%pxresult`,
/// `--no-stream`. Errors are not included; see [`final_error`].
pub fn non_streamed(cell: &CellRecord, grouping: Grouping) -> Vec<Output> {
    let mut out = StreamPrinter::new();
    if cell.single {
        if let Some(record) = cell.in_order().next() {
            out.print("stdout", &record.stdout, "");
            out.print("stderr", &record.stderr, "");
            for display in &record.displays {
                out.push(rich_output(record.engine, display));
            }
            if let Some(value) = value_output(record) {
                out.push(value);
            }
        }
        out.outputs.extend(notes(cell));
        return out.outputs;
    }
    let records: Vec<&EngineRecord> = cell.in_order().collect();
    match grouping {
        Grouping::Engine => {
            for record in &records {
                out.print(
                    "stdout",
                    &record.stdout,
                    &format!("[stdout:{}] ", record.engine),
                );
                out.print(
                    "stderr",
                    &record.stderr,
                    &format!("[stderr:{}] ", record.engine),
                );
                if !record.displays.is_empty() || record.value.is_some() {
                    out.push(output_header(record.engine));
                }
                for display in &record.displays {
                    out.push(rich_output(record.engine, display));
                }
                if let Some(value) = value_output(record) {
                    out.push(value);
                }
            }
        }
        Grouping::Type | Grouping::Order => {
            for record in &records {
                out.print(
                    "stdout",
                    &record.stdout,
                    &format!("[stdout:{}] ", record.engine),
                );
            }
            for record in &records {
                out.print(
                    "stderr",
                    &record.stderr,
                    &format!("[stderr:{}] ", record.engine),
                );
            }
            if grouping == Grouping::Order {
                let most = records.iter().map(|r| r.displays.len()).max().unwrap_or(0);
                for i in 0..most {
                    // Better than ipyparallel: engines with fewer displays still show theirs.
                    for record in records.iter().filter(|r| r.displays.len() > i) {
                        out.push(output_header(record.engine));
                        out.push(rich_output(record.engine, &record.displays[i]));
                    }
                }
            } else {
                for record in &records {
                    if !record.displays.is_empty() {
                        out.push(output_header(record.engine));
                    }
                    for display in &record.displays {
                        out.push(rich_output(record.engine, display));
                    }
                }
            }
            for record in &records {
                if let Some(value) = value_output(record) {
                    out.push(value);
                }
            }
        }
    }
    out.outputs.extend(notes(cell));
    out.outputs
}

/// The values of a streamed cell, shown at the end (streams were shown live), and its notes.
pub fn streamed_values(cell: &CellRecord) -> Vec<Output> {
    cell.in_order()
        .filter_map(value_output)
        .chain(notes(cell))
        .collect()
}

/// The compiler's notes on a cell (`[0-3:vars]` ...), on stdout after the engines' outputs.
fn notes(cell: &CellRecord) -> Option<Output> {
    (!cell.notes.is_empty()).then(|| Output::Stream {
        name: "stdout",
        text: cell.notes.concat(),
    })
}

/// The error a finished cell ends with when not streamed: the engine's own for a single-int
/// target, else a `CompositeError`.
pub fn final_error(cell: &CellRecord) -> Option<EngineError> {
    let failures = cell.failures();
    if failures.is_empty() {
        return None;
    }
    if cell.single {
        return failures[0].error.clone();
    }
    let mut evalue = String::from("one or more exceptions raised in: %px");
    for record in &failures {
        if let Some(error) = &record.error {
            evalue.push_str(&format!(
                "\n[{}:execute]{}: {}",
                record.engine,
                error.ename(),
                error.evalue
            ));
        }
    }
    // One traceback per distinct error: a shared compile error is drawn once for its group.
    let mut traceback = Vec::new();
    let mut drawn = 0;
    let mut covered = 0;
    for record in &failures {
        let Some(error) = &record.error else { continue };
        if error
            .shared_by
            .first()
            .is_some_and(|&first| first != record.engine)
        {
            continue;
        }
        if drawn == TB_LIMIT {
            break;
        }
        traceback.push(format!("[{}:execute]:", error_label(record.engine, error)));
        traceback.extend(error_lines(error));
        traceback.push(String::new());
        drawn += 1;
        covered += error.shared_by.len().max(1);
    }
    if failures.len() > covered {
        traceback.push(format!(
            "... {} more exceptions ...",
            failures.len() - covered
        ));
    }
    Some(EngineError {
        kind: ErrorKind::Composite,
        evalue,
        traceback,
        shared_by: Vec::new(),
        codes: Vec::new(),
    })
}

/// The error a streamed cell ends with: its failures were already shown as they happened.
pub fn already_displayed(cell: &CellRecord) -> Option<EngineError> {
    let count = cell.failures().len();
    if count == 0 {
        return None;
    }
    if cell.single {
        return final_error(cell);
    }
    // Better than ipyparallel's "1 errors".
    let text = if count == 1 {
        "1 error".to_owned()
    } else {
        format!("{count} errors")
    };
    Some(EngineError {
        kind: ErrorKind::AlreadyDisplayed,
        evalue: text.clone(),
        traceback: vec![text],
        shared_by: Vec::new(),
        codes: Vec::new(),
    })
}

/// `%px: k/n tasks` (or `items` for a map) with an HTML bar, for the progress display.
pub fn progress(
    label: &str,
    unit: &str,
    done: usize,
    total: usize,
    elapsed: f64,
) -> Map<String, Value> {
    let percent = if total == 0 {
        100.0
    } else {
        100.0 * done as f64 / total as f64
    };
    let text = format!("{label}: {done}/{total} {unit} ({elapsed:.1} s)");
    let html = format!(
        "<div style=\"font-family:monospace\"><progress value=\"{done}\" max=\"{total}\" style=\"width:20em\"></progress> {label}: {done}/{total} {unit} ({elapsed:.1} s, {percent:.0}%)</div>"
    );
    let mut data = Map::new();
    data.insert("text/plain".into(), Value::String(text));
    data.insert("text/html".into(), Value::String(html));
    data
}

/// The status view of a result: ready, elapsed, progress, serial and wall time, per engine.
pub fn status_view(cell: &CellRecord) -> Map<String, Value> {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let first_line = cell.code.lines().next().unwrap_or("");
    let mut text = format!(
        "code: {first_line}\nready: {}\nelapsed: {:.3} s\nprogress: {}/{}\nserial_time: {:.3} s\nwall_time: {:.3} s\n",
        cell.is_done(),
        cell.wall_time(),
        cell.done_count(),
        cell.engines.len(),
        cell.serial_time(),
        cell.wall_time(),
    );
    text.push_str("engine  status   count  submitted     started       completed     received\n");
    for record in cell.in_order() {
        text.push_str(&format!(
            "{:>6}  {:<7}  {:>5}  {}  {}  {}  {}\n",
            record.engine,
            record.status(),
            record
                .execution_count
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            time(Some(record.submitted)),
            time(record.started),
            time(record.completed),
            time(record.received),
        ));
    }
    let mut data = Map::new();
    data.insert("text/plain".into(), Value::String(text));
    data
}

#[cfg(test)]
mod tests;
