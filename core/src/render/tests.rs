//! The output shapes of [`super`], checked against ipyparallel's (px-behaviour.md).
use super::*;
use crate::records::CellRecord;

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
        kind: ErrorKind::Panic,
        evalue: format!("boom {id}"),
        traceback: vec![format!("panicked at src/lib.rs:1:1: boom {id}")],
        shared_by: Vec::new(),
        codes: Vec::new(),
    }));
}

#[test]
fn composite_error_shape_and_tb_limit() {
    let mut c = cell((0..6).collect(), false);
    for id in 0..6 {
        failing(&mut c, id);
    }
    let e = final_error(&c).unwrap();
    assert_eq!(e.ename(), "CompositeError");
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
        (e.ename(), e.evalue.as_str()),
        ("AlreadyDisplayedError", "2 errors")
    );
    assert!(streamed_failure(&c.engines[&1]).starts_with("[1:execute]:\npanicked at"));
}

fn failing_to_compile(c: &mut CellRecord, group: &[EngineId]) {
    let error = EngineError {
        kind: ErrorKind::Compilation,
        evalue: "mismatched types".into(),
        traceback: vec!["error[E0308]: mismatched types".into()],
        shared_by: group.to_vec(),
        codes: vec!["E0308".into()],
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
        .contains("\n[4:execute]CompilationError: mismatched types"));
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
    assert_eq!(final_error(&c).unwrap().ename(), "Panic");
    assert_eq!(already_displayed(&c).unwrap().ename(), "Panic");
}
