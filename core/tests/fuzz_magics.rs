//! Property tests of the magic parser: whatever a cell says, parsing never panics, bad input is
//! a usage error that names what is wrong, and nothing unparsed reaches an engine.
//!
//! CI runs the default number of cases; a longer run:
//! `PROPTEST_CASES=200000 cargo test --release -p rustpx-core --test fuzz_magics`

use proptest::prelude::*;
use rustpx_core::magics::{parse_cell, Magic};
use rustpx_core::targets::{self, Targets};

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

/// Numbers from every range a user can type: all of i64 and u64, beyond them, and floats.
fn any_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        Just(i128::MAX.to_string()),
        Just(i128::MIN.to_string()),
        Just("-0".to_owned()),
        (0u32..70_000).prop_map(|n| n.to_string()),
    ]
}

proptest! {
    #[test]
    fn slices_and_lists_over_the_full_integer_range_never_panic(
        a in any_number(),
        b in any_number(),
        c in any_number(),
        live in prop::collection::btree_set(0u32..64, 0..8),
    ) {
        let live: Vec<u32> = live.into_iter().collect();
        for text in [
            format!("{a}:{b}:{c}"),
            format!("{a}::{c}"),
            format!("::{c}"),
            format!("{a}:{b}"),
            a.clone(),
            format!("[{a},{b},{c}]"),
        ] {
            if let Ok(parsed) = targets::parse(&text) {
                if let Ok(ids) = targets::resolve(&parsed, &live) {
                    prop_assert!(ids.iter().all(|id| live.contains(id)), "{text}: {ids:?}");
                }
            }
        }
    }

    #[test]
    fn numeric_options_over_their_full_range_parse_or_fail_with_a_message(n in any_number()) {
        for cell in [
            format!("%engines start -n {n}"),
            format!("%engines stop {n}"),
            format!("%engines restart {n}"),
            format!("%%px -t {n}\n1"),
            format!("%%px --targets {n}:{n}:{n}\n1"),
            format!("%%px --progress-after {n}\n1"),
            format!("%%px --signal-on-interrupt {n}\n1"),
            format!("%pxconfig --progress-after {n}"),
            format!("%pxmap -t {n} f xs"),
        ] {
            if let Err(error) = parse_cell(&cell) {
                prop_assert!(!error.0.is_empty(), "{cell}");
            }
        }
        // A start never asks for more engines than one start may make.
        if let Ok(count) = n.parse::<u64>() {
            if count > 65_536 {
                let cell = format!("%engines start -n {n}");
                prop_assert!(parse_cell(&cell).is_err(), "{}", cell);
            }
        }
    }
}
