//! Task records to Jupyter outputs, in ipyparallel's exact shapes.
//!
//! Pure: records in, outputs out. The shapes are specified in
//! shared/reference/px-behaviour.md and checked by the tests below and by the integration tests.

use rustpx_protocol::{EngineId, MimeBundle};
use serde_json::{json, Map, Value};

use super::magics::Grouping;
use super::records::{CellRecord, EngineError, EngineRecord};

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
        lines.push(format!("{}: {}", error.ename, error.evalue));
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
    out.outputs
}

/// The values of a streamed cell, shown at the end (streams were shown live).
pub fn streamed_values(cell: &CellRecord) -> Vec<Output> {
    cell.in_order().filter_map(value_output).collect()
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
                record.engine, error.ename, error.evalue
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
        ename: "CompositeError".into(),
        evalue,
        traceback,
        shared_by: Vec::new(),
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
        ename: "AlreadyDisplayedError".into(),
        evalue: text.clone(),
        traceback: vec![text],
        shared_by: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::px::records::CellRecord;

    fn cell(targets: Vec<EngineId>, single: bool) -> CellRecord {
        CellRecord::new("cell".into(), "code".into(), targets, single)
    }

    fn stream_texts(outputs: &[Output]) -> Vec<(&'static str, String)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Stream { name, text } => Some((*name, text.clone())),
                _ => None,
            })
            .collect()
    }

    fn plain(output: &Output) -> String {
        match output {
            Output::Display { data, .. } => data["text/plain"].as_str().unwrap().to_owned(),
            Output::Stream { text, .. } => text.clone(),
        }
    }

    #[test]
    fn non_streamed_stdout_blocks_are_contiguous() {
        let mut c = cell(vec![0, 1], false);
        c.engines.get_mut(&0).unwrap().stdout = "0\n".into();
        c.engines.get_mut(&1).unwrap().stdout = "1\n".into();
        let out = non_streamed(&c, Grouping::Type);
        assert_eq!(
            stream_texts(&out),
            vec![("stdout", "[stdout:0] \n0\n[stdout:1] \n1\n".to_owned())]
        );
    }

    #[test]
    fn a_missing_trailing_newline_gets_one_before_the_next_header() {
        let mut c = cell(vec![0, 1], false);
        c.engines.get_mut(&0).unwrap().stdout = "a".into();
        c.engines.get_mut(&1).unwrap().stdout = "b\n".into();
        let out = non_streamed(&c, Grouping::Type);
        assert_eq!(stream_texts(&out)[0].1, "[stdout:0] \na\n[stdout:1] \nb\n");
    }

    #[test]
    fn grouping_by_engine_interleaves_streams_and_values() {
        let mut c = cell(vec![1, 0], false);
        for (id, r) in c.engines.iter_mut() {
            r.stdout = format!("out{id}\n");
            r.stderr = format!("err{id}\n");
            r.value = Some(MimeBundle::from([("text/plain".into(), id.to_string())]));
            r.execution_count = Some(3);
        }
        let out = non_streamed(&c, Grouping::Engine);
        let shown: Vec<String> = out.iter().map(plain).collect();
        assert_eq!(
            shown,
            vec![
                "[stdout:1] \nout1\n",
                "[stderr:1] \nerr1\n",
                "[output:1]",
                "\u{1b}[0;31mOut[1:3]: \u{1b}[0m1",
                "[stdout:0] \nout0\n",
                "[stderr:0] \nerr0\n",
                "[output:0]",
                "\u{1b}[0;31mOut[0:3]: \u{1b}[0m0",
            ]
        );
    }

    #[test]
    fn grouping_by_order_shows_every_display() {
        let mut c = cell(vec![0, 1], false);
        let b = |s: &str| MimeBundle::from([("text/plain".into(), s.to_owned())]);
        c.engines.get_mut(&0).unwrap().displays = vec![b("a0"), b("a1")];
        c.engines.get_mut(&1).unwrap().displays = vec![b("b0")];
        let shown: Vec<String> = non_streamed(&c, Grouping::Order)
            .iter()
            .map(plain)
            .collect();
        assert_eq!(
            shown,
            vec!["[output:0]", "a0", "[output:1]", "b0", "[output:0]", "a1"]
        );
    }

    #[test]
    fn a_unit_value_is_not_shown() {
        let mut c = cell(vec![0], false);
        let r = c.engines.get_mut(&0).unwrap();
        r.value = Some(MimeBundle::from([("text/plain".into(), "()".into())]));
        assert!(value_output(r).is_none());
    }

    #[test]
    fn a_single_target_drops_headers() {
        let mut c = cell(vec![1], true);
        let r = c.engines.get_mut(&1).unwrap();
        r.stdout = "x\n".into();
        r.value = Some(MimeBundle::from([("text/plain".into(), "1\n2".into())]));
        r.execution_count = Some(2);
        let shown: Vec<String> = non_streamed(&c, Grouping::Type).iter().map(plain).collect();
        assert_eq!(shown, vec!["x\n", "\u{1b}[0;31mOut[1:2]: \u{1b}[0m\n1\n2"]);
    }

    fn rich_value(c: &mut CellRecord, id: EngineId, mime: &str, content: &str) -> Output {
        let r = c.engines.get_mut(&id).unwrap();
        r.value = Some(MimeBundle::from([
            ("text/plain".into(), "Chart".into()),
            (mime.into(), content.into()),
        ]));
        r.execution_count = Some(4);
        value_output(r).unwrap()
    }

    fn data_of(output: &Output) -> (&Map<String, Value>, &Map<String, Value>) {
        match output {
            Output::Display { data, metadata } => (data, metadata),
            Output::Stream { .. } => panic!("expected a display"),
        }
    }

    #[test]
    fn an_svg_value_gets_html_with_its_label_above_the_svg() {
        let mut c = cell(vec![0, 1], false);
        let out = rich_value(&mut c, 1, "image/svg+xml", "<svg id=\"s\"></svg>");
        let (data, metadata) = data_of(&out);
        assert_eq!(metadata["engine"], 1);
        assert_eq!(data["text/plain"], "\u{1b}[0;31mOut[1:4]: \u{1b}[0mChart");
        assert_eq!(data["image/svg+xml"], "<svg id=\"s\"></svg>");
        let html = data["text/html"].as_str().unwrap();
        let label = html.find(">Out[1:4]:</div>").expect("the label");
        let svg = html.find("<svg id=\"s\"></svg>").expect("the svg inline");
        assert!(label < svg, "{html}");
        assert!(html.contains("data-rustpx-engine=\"1\""));
    }

    #[test]
    fn a_png_value_is_shown_as_an_image_under_its_label() {
        let mut c = cell(vec![0], false);
        let out = rich_value(&mut c, 0, "image/png", "iVBORw0K\nGgo=\n");
        let (data, _) = data_of(&out);
        assert_eq!(data["image/png"], "iVBORw0K\nGgo=\n");
        let html = data["text/html"].as_str().unwrap();
        assert!(html.contains(">Out[0:4]:</div><img src=\"data:image/png;base64,iVBORw0KGgo=\">"));
    }

    #[test]
    fn an_html_value_keeps_its_html_under_the_label() {
        let mut c = cell(vec![0], false);
        let out = rich_value(&mut c, 0, "text/html", "<table><tr><td>1</td></tr></table>");
        let html = data_of(&out).0["text/html"].as_str().unwrap().to_owned();
        assert!(html.contains(">Out[0:4]:</div><table><tr><td>1</td></tr></table></div>"));
    }

    #[test]
    fn plain_values_and_displays_get_no_html() {
        let mut c = cell(vec![0], false);
        let r = c.engines.get_mut(&0).unwrap();
        r.value = Some(MimeBundle::from([("text/plain".into(), "5".into())]));
        let out = value_output(r).unwrap();
        assert!(!data_of(&out).0.contains_key("text/html"));
        // A display is labelled by the `[output:N]` display before it, visible in the browser.
        let bundle = MimeBundle::from([("image/svg+xml".into(), "<svg/>".into())]);
        let (data, metadata) = match rich_output(3, &bundle) {
            Output::Display { data, metadata } => (data, metadata),
            Output::Stream { .. } => panic!(),
        };
        assert_eq!(data.len(), 1);
        assert_eq!(metadata["engine"], 3);
    }

    fn failing(c: &mut CellRecord, id: EngineId) {
        c.engines.get_mut(&id).unwrap().finish(Some(EngineError {
            ename: "Panic".into(),
            evalue: format!("boom {id}"),
            traceback: vec![format!("panicked at src/lib.rs:1:1: boom {id}")],
            shared_by: Vec::new(),
        }));
    }

    #[test]
    fn composite_error_shape_and_tb_limit() {
        let mut c = cell((0..6).collect(), false);
        for id in 0..6 {
            failing(&mut c, id);
        }
        let e = final_error(&c).unwrap();
        assert_eq!(e.ename, "CompositeError");
        assert!(e
            .evalue
            .starts_with("one or more exceptions raised in: %px\n[0:execute]Panic: boom 0\n"));
        assert_eq!(e.evalue.lines().count(), 7);
        assert_eq!(e.traceback[0], "[0:execute]:");
        assert_eq!(e.traceback[1], "panicked at src/lib.rs:1:1: boom 0");
        assert_eq!(e.traceback[2], "");
        assert_eq!(e.traceback.last().unwrap(), "... 2 more exceptions ...");
        assert_eq!(e.traceback.len(), 4 * 3 + 1);
    }

    #[test]
    fn streamed_errors_end_in_a_count() {
        let mut c = cell(vec![0, 1, 2], false);
        failing(&mut c, 1);
        assert_eq!(already_displayed(&c).unwrap().traceback, vec!["1 error"]);
        failing(&mut c, 2);
        let e = already_displayed(&c).unwrap();
        assert_eq!(
            (e.ename.as_str(), e.evalue.as_str()),
            ("AlreadyDisplayedError", "2 errors")
        );
        assert!(streamed_failure(&c.engines[&1]).starts_with("[1:execute]:\npanicked at"));
    }

    fn failing_to_compile(c: &mut CellRecord, group: &[EngineId]) {
        let error = EngineError {
            ename: "CompileError".into(),
            evalue: "mismatched types".into(),
            traceback: vec!["error[E0308]: mismatched types".into()],
            shared_by: group.to_vec(),
        };
        for id in group {
            c.engines.get_mut(id).unwrap().finish(Some(error.clone()));
        }
    }

    #[test]
    fn engine_ranges_are_written_as_runs() {
        assert_eq!(engine_ranges(&(0..32).collect::<Vec<_>>()), "0-31");
        assert_eq!(engine_ranges(&[2, 0]), "0,2");
        assert_eq!(engine_ranges(&[0, 1]), "0,1");
        assert_eq!(engine_ranges(&[9, 0, 1, 2, 3, 5, 7, 8]), "0-3,5,7-9");
        assert_eq!(engine_ranges(&[4]), "4");
    }

    #[test]
    fn a_shared_compile_error_streams_once_with_every_engine() {
        let mut c = cell((0..4).collect(), false);
        failing_to_compile(&mut c, &[0, 1, 2, 3]);
        assert_eq!(
            streamed_failure(&c.engines[&0]),
            "[0-3:execute]:\nerror[E0308]: mismatched types\n"
        );
        for id in 1..4 {
            assert_eq!(streamed_failure(&c.engines[&id]), "");
        }
        // Counted once per engine.
        assert_eq!(already_displayed(&c).unwrap().evalue, "4 errors");
    }

    #[test]
    fn a_shared_compile_error_is_drawn_once_in_a_composite_error() {
        let mut c = cell((0..6).collect(), false);
        failing_to_compile(&mut c, &[0, 2, 3, 4, 5]);
        failing(&mut c, 1);
        let e = final_error(&c).unwrap();
        // Each engine is listed once in the evalue.
        assert_eq!(e.evalue.lines().count(), 7);
        assert!(e
            .evalue
            .contains("\n[4:execute]CompileError: mismatched types"));
        assert_eq!(
            e.traceback,
            vec![
                "[0,2-5:execute]:",
                "error[E0308]: mismatched types",
                "",
                "[1:execute]:",
                "panicked at src/lib.rs:1:1: boom 1",
                "",
            ]
        );
    }

    #[test]
    fn the_traceback_limit_counts_drawn_errors_and_names_the_rest() {
        let mut c = cell((0..8).collect(), false);
        failing_to_compile(&mut c, &[0, 1]);
        for id in 2..8 {
            failing(&mut c, id);
        }
        let e = final_error(&c).unwrap();
        let headers: Vec<&String> = e
            .traceback
            .iter()
            .filter(|l| l.ends_with(":execute]:"))
            .collect();
        assert_eq!(
            headers,
            vec![
                "[0,1:execute]:",
                "[2:execute]:",
                "[3:execute]:",
                "[4:execute]:"
            ]
        );
        assert_eq!(e.traceback.last().unwrap(), "... 3 more exceptions ...");
    }

    #[test]
    fn a_single_target_raises_the_engines_own_error() {
        let mut c = cell(vec![2], true);
        failing(&mut c, 2);
        assert_eq!(final_error(&c).unwrap().ename, "Panic");
        assert_eq!(already_displayed(&c).unwrap().ename, "Panic");
    }
}
