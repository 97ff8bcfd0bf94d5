//! Whether a cell is ready to run, for `is_complete_request` (the console uses it to decide
//! between running a cell and opening a continuation line).
//!
//! evcxr offers no such check, so the cell is split into tokens by rustc's own lexer
//! (`ra-ap-rustc_lexer`, which evcxr's rust-analyzer already brings): a cell is incomplete while a
//! bracket, a string (raw or not) or a block comment is still open, and invalid when a closing
//! bracket has no opener or a character literal is not closed. Because the lexer knows Rust's
//! literals, `'{'`, `r#"a"b"#` and lifetimes such as `'a` are what they are, not brackets or
//! quotes. Magic lines (`%%px -t 1,2`, `:dep x = "1"`) lex as ordinary tokens.

use ra_ap_rustc_lexer::{tokenize, validate_raw_str, FrontmatterAllowed, LiteralKind};
use ra_ap_rustc_lexer::{RawStrError, TokenKind};

/// What `is_complete_reply` says about a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    /// Still open; the indent a continuation line should start with.
    Incomplete {
        indent: String,
    },
    Invalid,
}

/// What one token does to the cell's completeness.
enum Effect {
    Open(TokenKind),
    Close(TokenKind),
    /// A literal or comment that runs to the end of the cell and may be closed on a later line.
    LeftOpen,
    /// A token no later line can repair.
    Broken,
    Nothing,
}

/// Classifies `code` from its tokens.
pub fn check(code: &str) -> Completeness {
    let mut open: Vec<TokenKind> = Vec::new();
    let mut left_open = false;
    let mut offset = 0usize;
    for token in tokenize(code, FrontmatterAllowed::No) {
        let text = &code[offset..offset + token.len as usize];
        offset += token.len as usize;
        match effect(token.kind, text) {
            Effect::Open(kind) => open.push(kind),
            Effect::Close(opener) => {
                if open.pop() != Some(opener) {
                    return Completeness::Invalid;
                }
            }
            Effect::LeftOpen => left_open = true,
            Effect::Broken => return Completeness::Invalid,
            Effect::Nothing => {}
        }
    }
    if left_open || !open.is_empty() {
        Completeness::Incomplete {
            indent: "    ".repeat(open.len().min(8)),
        }
    } else {
        Completeness::Complete
    }
}

fn effect(kind: TokenKind, text: &str) -> Effect {
    use TokenKind::*;
    match kind {
        OpenParen | OpenBracket | OpenBrace => Effect::Open(kind),
        CloseParen => Effect::Close(OpenParen),
        CloseBracket => Effect::Close(OpenBracket),
        CloseBrace => Effect::Close(OpenBrace),
        BlockComment {
            terminated: false, ..
        } => Effect::LeftOpen,
        Literal { kind, .. } => literal_effect(kind, text),
        _ => Effect::Nothing,
    }
}

fn literal_effect(kind: LiteralKind, text: &str) -> Effect {
    use LiteralKind::*;
    match kind {
        Str { terminated: false } | ByteStr { terminated: false } | CStr { terminated: false } => {
            Effect::LeftOpen
        }
        // A character literal holds one character on one line: nothing later can close it.
        Char { terminated: false } | Byte { terminated: false } => Effect::Broken,
        RawStr { n_hashes: None } => raw_effect(text, 1),
        RawByteStr { n_hashes: None } | RawCStr { n_hashes: None } => raw_effect(text, 2),
        _ => Effect::Nothing,
    }
}

/// A raw string the lexer could not close is open when it merely lacks its terminator, and
/// broken when its opening is malformed (`r#~"`, or more than 255 `#`).
fn raw_effect(text: &str, prefix_len: u32) -> Effect {
    match validate_raw_str(text, prefix_len) {
        Err(RawStrError::NoTerminator { .. }) => Effect::LeftOpen,
        Err(_) => Effect::Broken,
        Ok(()) => Effect::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(indent: &str) -> Completeness {
        Completeness::Incomplete {
            indent: indent.into(),
        }
    }

    #[test]
    fn cells_are_classified_as_rust_reads_them() {
        let cases = [
            ("let x = vec![1, 2];", Completeness::Complete),
            ("fn f() { \"}\" ; }", Completeness::Complete),
            ("// {\n1", Completeness::Complete),
            ("%%px -t 1,2\nlet x = 1;", Completeness::Complete),
            (":dep serde = { version = \"1\" }", Completeness::Complete),
            // Literals and lifetimes that hold brackets or quotes.
            ("let c = '{';", Completeness::Complete),
            ("let c = '\"';", Completeness::Complete),
            ("let s = r#\"a\"b\"#;", Completeness::Complete),
            ("let s = br##\"}\"#\"##;", Completeness::Complete),
            (
                "fn f<'a>(x: &'a str) -> &'a str { x }",
                Completeness::Complete,
            ),
            ("let b = b'(';", Completeness::Complete),
            ("/* a /* nested */ comment */ 1", Completeness::Complete),
            // Still open: a later line can close them.
            ("fn f() {", open("    ")),
            ("fn f() {\n    if x {", open("        ")),
            ("let s = \"abc", open("")),
            ("let s = r#\"abc\"\n", open("")),
            ("let s = c\"abc", open("")),
            ("/* open", open("")),
            ("/* a /* nested */ still open", open("")),
            // Nothing later can repair these.
            ("1 + 2)", Completeness::Invalid),
            ("(]", Completeness::Invalid),
            ("let c = '\\n", Completeness::Invalid),
            ("let s = r#~\"x\"#;", Completeness::Invalid),
        ];
        for (code, expected) in cases {
            assert_eq!(check(code), expected, "{code:?}");
        }
    }
}
