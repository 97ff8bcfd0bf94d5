//! What a cell's text may do to its context, judged from its words alone.
//!
//! Both contexts keep compiled cells to run again (the px compiler per engine group, the plain
//! context for generated transfer cells), which is only right while the items a cell was
//! compiled with are unchanged. These checks are conservative: a false "yes" only costs a
//! compile.

/// Whether `code` may define or replace an item (function, type, import, …): such a cell can
/// change the state even when every name stays the same.
pub fn may_define_items(code: &str) -> bool {
    const ITEM_WORDS: [&str; 14] = [
        "fn",
        "struct",
        "enum",
        "union",
        "impl",
        "trait",
        "use",
        "mod",
        "type",
        "const",
        "static",
        "macro_rules",
        "extern",
        "#",
    ];
    code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '#'))
        .any(|word| ITEM_WORDS.contains(&word) || word.starts_with('#'))
}

/// Whether `code` may change what later cells compile against: an item, or an evcxr command
/// (`:dep`, `:opt`, `:preserve_vars_on_panic`, …) that changes dependencies or generated code.
pub fn may_change_compilation(code: &str) -> bool {
    may_define_items(code) || code.lines().any(|line| line.trim_start().starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_definitions_are_recognised() {
        assert!(may_define_items("fn f() {}"));
        assert!(may_define_items("struct P { x: u8 }"));
        assert!(may_define_items("use std::fmt;"));
        assert!(may_define_items("#[derive(Debug)] struct A;"));
        assert!(!may_define_items("println!(\"{}\", x + 1);"));
        assert!(!may_define_items("let function = 3; x.fnord()"));
    }

    #[test]
    fn commands_change_compilation_and_plain_statements_do_not() {
        assert!(may_change_compilation(":dep itoa = \"1\""));
        assert!(may_change_compilation("let x = 1;\n  :opt 2"));
        assert!(may_change_compilation("struct Config { n: u64 }"));
        assert!(!may_change_compilation(
            "counter[0] = 3;\nlet y = counter.len();"
        ));
    }
}
