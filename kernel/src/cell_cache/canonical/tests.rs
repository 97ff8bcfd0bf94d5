use super::*;

/// One line per variable, as evcxr writes it: `line` with `{v}` standing for the name.
fn per_variable(vars: &[&str], line: &str) -> String {
    vars.iter().map(|v| line.replace("{v}", v) + "\n").collect()
}

/// A cell crate as evcxr writes it, with its items and variables in the order given.
fn cell(items: &[&str], vars: &[&str]) -> String {
    let put = "evcxr_variable_store.put_variable::<u64>(stringify!({v}), {v});";
    [
        "#![allow(unused_imports, unused_mut, dead_code)]\n".to_owned(),
        items.iter().map(|item| format!("{item}\n")).collect(),
        "mod evcxr_internal_runtime {\npub struct VariableStore {}\n}\n".to_owned(),
        "#[unsafe(no_mangle)]\npub extern \"C\" fn run_user_code_3(\nmut evcxr_variable_store: *mut u8) -> *mut u8 {\n".to_owned(),
        "{let mut vars_ok = true;\n".to_owned(),
        per_variable(vars, "vars_ok &= evcxr_variable_store.check_variable::<u64>(stringify!({v}));"),
        "if !vars_ok {return evcxr_variable_store;}}\n".to_owned(),
        per_variable(vars, "let {v} = evcxr_variable_store.take_variable::<u64>(stringify!({v}));"),
        "match std::panic::catch_unwind(\n  std::panic::AssertUnwindSafe(||{\nlet x = total(a);\nlet y = x + 1;\n".to_owned(),
        per_variable(&["y", "x"], put),
        "})) {\n  Ok(_) => {}\n  Err(_) => {}\n}\n".to_owned(),
        per_variable(vars, put),
        "evcxr_variable_store\n}\n".to_owned(),
    ]
    .concat()
}

const SQUARE: &str = "fn square(x: u64) -> u64 {\n    x * x\n}";
const TOTAL: &str = "fn total(x: u64) -> u64 { square(x) + 1 }";
const POINT: &str = "#[derive(Debug)]\nstruct Point {\n    x: u64,\n}";
const USE: &str = "use std::collections::HashMap;";

#[test]
fn every_order_evcxr_may_write_becomes_one() {
    let one = canonical(&cell(&[SQUARE, TOTAL, POINT, USE], &["a", "b", "c"]));
    let other = canonical(&cell(&[USE, POINT, TOTAL, SQUARE], &["c", "a", "b"]));
    assert_eq!(one.text, other.text);
    assert!(!other.unchanged());
    let again = canonical(&one.text);
    assert!(
        again.unchanged(),
        "the canonical order is its own canonical order"
    );
}

#[test]
fn diagnostics_point_at_the_line_evcxr_wrote() {
    let original = cell(&[SQUARE, TOTAL, POINT], &["b", "a"]);
    let canon = canonical(&original);
    let line_in = |text: &str, needle: &str| {
        text.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1
    };
    let canonical_line = line_in(&canon.text, "x * x");
    let stderr = format!(
        "{{\"message\":\"mismatched types\",\"spans\":[{{\"file_name\":\"src/lib.rs\",\"line_start\":{canonical_line},\"line_end\":{canonical_line},\"expansion\":{{\"span\":{{\"file_name\":\"src/lib.rs\",\"line_start\":{canonical_line},\"line_end\":{canonical_line}}}}}}}],\"children\":[]}}\nnot json\n"
    );
    let restored = canon.restore_lines(&stderr, "src/lib.rs");
    let want = line_in(&original, "x * x");
    assert_ne!(want, canonical_line, "the sample must move the line");
    let mut lines = restored.lines();
    let value: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let span = &value["spans"][0];
    assert_eq!(span["line_start"], want);
    assert_eq!(span["line_end"], want);
    assert_eq!(span["expansion"]["span"]["line_start"], want);
    assert_eq!(lines.next(), Some("not json"));
    let other_file = canon.restore_lines(&stderr, "src/other.rs");
    assert!(other_file.contains(&format!("\"line_start\":{canonical_line}")));
}

/// Whether the canonical text still has `items` in this order.
fn kept(source: &str, items: &[&str]) -> bool {
    let text = canonical(source).text;
    let at: Vec<Option<usize>> = items.iter().map(|item| text.find(item)).collect();
    at.iter().all(Option::is_some) && at.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn macros_keep_the_items_where_they_are() {
    assert!(!kept(&cell(&[TOTAL, SQUARE], &["a"]), &[TOTAL, SQUARE]));
    let rules = "macro_rules! twice {\n    ($x:expr) => { $x * 2 };\n}";
    assert!(kept(
        &cell(&[TOTAL, rules, SQUARE], &["a"]),
        &[TOTAL, rules, SQUARE]
    ));
    let call = "thread_local! { static N: u8 = 1; }";
    assert!(kept(
        &cell(&[TOTAL, call, SQUARE], &["a"]),
        &[TOTAL, call, SQUARE]
    ));
}

#[test]
fn source_that_does_not_parse_or_shares_lines_is_left_alone() {
    let broken = cell(&[TOTAL, "fn square(x: u64 -> u64 { x }"], &["b", "a"]);
    assert!(canonical(&broken).unchanged());
    let shared = "fn b() {} fn a() {}";
    assert!(kept(&cell(&[TOTAL, shared], &["a"]), &[TOTAL, shared]));
}

#[test]
fn a_run_naming_one_variable_twice_keeps_its_order() {
    let lines = [
        "evcxr_variable_store.put_variable::<u64>(stringify!(b), b);\n",
        "evcxr_variable_store.put_variable::<u8>(stringify!(b), a);\n",
    ];
    assert!(!distinct_variables(&lines));
    let mut source = String::from("fn run_user_code_1() {\n");
    source.push_str(&lines.concat());
    source.push_str("evcxr_variable_store\n}\n");
    assert!(canonical(&source).unchanged());
}

#[test]
fn items_are_sorted_in_a_context_that_has_seen_a_question_mark() {
    let error_type = "\n            struct EvcxrUserCodeError {}\n            impl<T: std::fmt::Debug> From<T> for EvcxrUserCodeError {\n                fn from(_: T) -> Self { EvcxrUserCodeError {} }\n            }\n        ";
    let one = cell(&[TOTAL, SQUARE, error_type], &["a"]);
    let other = cell(&[SQUARE, TOTAL, error_type], &["a"]);
    assert_eq!(canonical(&one).text, canonical(&other).text);
    assert!(!kept(&one, &[TOTAL, SQUARE]));
}

#[test]
fn a_module_of_macros_keeps_the_items_where_they_are() {
    let module = "#[macro_use]\nmod helpers {\n    macro_rules! twice {\n        ($x:expr) => { $x * 2 };\n    }\n}";
    assert!(kept(
        &cell(&[TOTAL, module, SQUARE], &["a"]),
        &[TOTAL, module, SQUARE]
    ));
}

/// `cell` with the user's crate attributes after evcxr's own, in the order given.
fn cell_with_attributes(attributes: &[&str]) -> String {
    let attributes: String = attributes.iter().map(|a| format!("{a}\n")).collect();
    cell(&[SQUARE, TOTAL], &["a", "b"]).replacen(
        "dead_code)]\n",
        &format!("dead_code)]\n{attributes}"),
        1,
    )
}

#[test]
fn the_users_crate_attributes_are_sorted_after_evcxrs_own() {
    let deny = "#![deny(unsafe_code)]";
    let recursion = "#![recursion_limit = \"256\"]";
    let one = canonical(&cell_with_attributes(&[recursion, deny]));
    let other = canonical(&cell_with_attributes(&[deny, recursion]));
    assert_eq!(one.text, other.text);
    assert!(
        one.text
            .starts_with(&format!("{EVCXR_ATTRIBUTE}\n{deny}\n{recursion}\n")),
        "{}",
        one.text
    );
    assert!(canonical(&one.text).unchanged());
}

#[test]
fn crate_attributes_sharing_a_line_keep_their_order() {
    let shared = "#![deny(unsafe_code)] #![recursion_limit = \"256\"]";
    let source = cell_with_attributes(&["#![warn(missing_docs)]", shared]);
    let canon = canonical(&source);
    let attributes = |text: &str| text.lines().skip(1).take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(attributes(&canon.text), attributes(&source));
}
