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

/// Whether evcxr displays a value at the end of `code`: its last statement is an expression
/// without a semicolon (evcxr's own rule, judged with the same parser on the same wrapping).
/// Engines use it to tell displays from the value: in a cell without a final expression every
/// rich output is a display and can be shown the moment it is printed. Code that does not parse
/// counts as ending in an expression, the cautious answer (displays then wait for what follows).
pub fn ends_in_expression(code: &str) -> bool {
    use ra_ap_syntax::{ast, AstNode};
    let Some(statements) = statements_of(code) else {
        return true;
    };
    match statements.syntax().children().last() {
        // Loops are expressions too, but their value is always `()`, which shows nothing.
        Some(last) => ast::Expr::cast(last)
            .is_some_and(|e| !matches!(e, ast::Expr::ForExpr(_) | ast::Expr::WhileExpr(_))),
        None => false,
    }
}

/// A cell's Rust as evcxr sees it: its lines without evcxr's `:` commands, parsed as the body of
/// a function (evcxr's own wrapping); `None` when that does not parse.
pub fn statements_of(code: &str) -> Option<ra_ap_syntax::ast::StmtList> {
    use ra_ap_syntax::{ast, AstNode, Edition, SourceFile};
    let rust: Vec<&str> = code
        .lines()
        .filter(|line| !line.trim_start().starts_with(':'))
        .collect();
    let wrapped = format!("fn f(){{{}\n}}", rust.join("\n"));
    let parse = SourceFile::parse(&wrapped, Edition::Edition2024);
    if !parse.errors().is_empty() {
        return None;
    }
    parse
        .tree()
        .syntax()
        .children()
        .next()
        .and_then(ast::Fn::cast)
        .and_then(|function| function.body())
        .and_then(|body| body.stmt_list())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_expression_is_told_from_statements() {
        assert!(ends_in_expression("1 + 1"));
        assert!(ends_in_expression("let x = 2;\nx * 3"));
        assert!(ends_in_expression(":dep itoa = \"1\"\nvec![1, 2]"));
        assert!(ends_in_expression("if true { 1 } else { 2 }"));
        assert!(!ends_in_expression("let x = 2;"));
        assert!(!ends_in_expression("println!(\"a\");\nshow(1);"));
        assert!(!ends_in_expression("fn f() -> u8 { 1 }"));
        assert!(!ends_in_expression(":dep itoa = \"1\""));
        assert!(!ends_in_expression(""));
        assert!(!ends_in_expression("for i in 0..3 { println!(\"{i}\"); }"));
        // Unparsable: the cautious answer.
        assert!(ends_in_expression("let x = ;"));
    }

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
