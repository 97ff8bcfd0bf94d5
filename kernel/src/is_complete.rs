//! Whether a cell is ready to run, for `is_complete_request` (the console uses it to decide
//! between running a cell and opening a continuation line).
//!
//! evcxr offers no such check, so this is a lexical one: a cell is incomplete while a bracket, a
//! string or a block comment is still open, and invalid when a closing bracket has no opener.

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

/// Classifies `code` by scanning brackets, string and char literals, and comments.
pub fn check(code: &str) -> Completeness {
    let mut open: Vec<char> = Vec::new();
    let mut chars = code.chars().peekable();
    let mut in_string = false;
    let mut block_comments = 0usize;
    while let Some(c) = chars.next() {
        if block_comments > 0 {
            match (c, chars.peek()) {
                ('*', Some('/')) => {
                    chars.next();
                    block_comments -= 1;
                }
                ('/', Some('*')) => {
                    chars.next();
                    block_comments += 1;
                }
                _ => {}
            }
            continue;
        }
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                block_comments += 1;
            }
            '"' => in_string = true,
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let expected = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(expected) {
                    return Completeness::Invalid;
                }
            }
            _ => {}
        }
    }
    if in_string || block_comments > 0 || !open.is_empty() {
        Completeness::Incomplete {
            indent: "    ".repeat(open.len().min(8)),
        }
    } else {
        Completeness::Complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_code_is_complete() {
        assert_eq!(check("let x = vec![1, 2];"), Completeness::Complete);
        assert_eq!(check("fn f() { \"}\" ; }"), Completeness::Complete);
        assert_eq!(check("// {\n1"), Completeness::Complete);
    }

    #[test]
    fn open_brackets_strings_and_comments_are_incomplete() {
        assert_eq!(
            check("fn f() {"),
            Completeness::Incomplete {
                indent: "    ".into()
            }
        );
        assert!(matches!(
            check("let s = \"abc"),
            Completeness::Incomplete { .. }
        ));
        assert!(matches!(check("/* open"), Completeness::Incomplete { .. }));
    }

    #[test]
    fn a_stray_closer_is_invalid() {
        assert_eq!(check("1 + 2)"), Completeness::Invalid);
        assert_eq!(check("(]"), Completeness::Invalid);
    }
}
