//! Property tests of the magic parser: whatever a cell says, parsing never panics, bad input is
//! a usage error that names what is wrong, and nothing unparsed reaches an engine.
//!
//! CI runs the default number of cases; a longer run:
//! `PROPTEST_CASES=200000 cargo test --release -p rustpx-kernel --test fuzz_magics`

use proptest::prelude::*;
use rustpx_kernel::px::magics::{parse_cell, Magic};
use rustpx_kernel::px::targets::{self, Targets};

/// Words that magic lines are made of, so that random cells hit the interesting paths.
fn magic_words() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "%px",
        "%%px",
        "%pxresult",
        "%pxconfig",
        "%autopx",
        "%engines",
        "-t",
        "--targets",
        "-a",
        "-b",
        "--block",
        "--noblock",
        "--stream",
        "--no-stream",
        "--group-outputs",
        "type",
        "engine",
        "order",
        "bogus",
        "-e",
        "-r",
        "-o",
        "--out",
        "--local",
        "--progress-after",
        "--signal-on-interrupt",
        "SIGINT",
        "0",
        "-1",
        "2.5",
        "all",
        "::2",
        "1:3",
        "[0,1]",
        "1,2",
        "99",
        "start",
        "stop",
        "restart",
        "-n",
        "list",
        "--status",
        "'quoted arg'",
        "\"",
        "=",
        "--targets=all",
        "--group-outputs=engine",
        "ü",
        "\t",
        "",
    ])
    .prop_map(str::to_owned)
}

proptest! {
    #[test]
    fn any_text_parses_or_fails_cleanly(cell in "\\PC{0,200}") {
        let _ = parse_cell(&cell);
    }

    #[test]
    fn magic_like_lines_parse_or_fail_with_a_message(
        words in prop::collection::vec(magic_words(), 1..8),
        body in "\\PC{0,40}",
    ) {
        let cell = format!("{}\n{body}", words.join(" "));
        match parse_cell(&cell) {
            Ok(Some(Magic::Px { code, .. })) => {
                // Only the code of a %px cell goes to the engines; the magic line never does.
                prop_assert!(!code.starts_with("%%px"));
            }
            Ok(_) => {}
            Err(error) => prop_assert!(!error.0.is_empty()),
        }
    }

    #[test]
    fn targets_never_panic_and_resolve_within_the_live_set(
        text in "[0-9:,\\[\\] -]{0,12}|all|\\PC{0,12}",
        live in prop::collection::btree_set(0u32..16, 0..8),
    ) {
        let live: Vec<u32> = live.into_iter().collect();
        if let Ok(parsed) = targets::parse(&text) {
            if let Ok(ids) = targets::resolve(&parsed, &live) {
                prop_assert!(ids.iter().all(|id| live.contains(id)));
                if parsed == Targets::All {
                    prop_assert_eq!(ids, live);
                }
            }
        }
    }
}
