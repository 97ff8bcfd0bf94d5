//! What went wrong in a compile, read from rustc's error codes.
//!
//! A generated cell (a transfer, a map) that fails to compile gets an explanation in the user's
//! terms: "`f` is not defined on engine 2", "`Point` cannot leave the engines". Which one is
//! decided by the codes rustc gives its errors (`E0425`, ...), which are stable across compiler
//! versions, never by the wording of its messages. See `rustc --explain CODE`.

/// A name that is not in scope: a value or function (E0425; rustc 1.95 reports unknown types
/// under it too), a type (E0412), a struct (E0422), a path (E0433).
pub const UNRESOLVED: &[&str] = &["E0425", "E0412", "E0422", "E0433"];
/// A `let` without `mut` assigned again: E0384.
pub const ASSIGNED_TWICE: &[&str] = &["E0384"];
/// A value of the wrong type, or a call of something that is no function or takes other
/// arguments: E0308 mismatched types, E0618 not a function, E0061 wrong number of arguments,
/// E0631 closure argument types, E0593 closure argument count.
pub const WRONG_TYPE: &[&str] = &["E0308", "E0618", "E0061", "E0631", "E0593"];
/// A trait bound that does not hold: E0277.
pub const MISSING_TRAIT: &[&str] = &["E0277"];

/// Whether any of `codes` is one of `kind`.
pub fn any_of(codes: &[String], kind: &[&str]) -> bool {
    codes.iter().any(|code| kind.contains(&code.as_str()))
}

/// The name an unresolved-name error is about (rustc quotes it first in its message), when
/// `codes` say that is what failed.
pub fn unresolved_name<'m>(codes: &[String], message: &'m str) -> Option<&'m str> {
    if !any_of(codes, UNRESOLVED) {
        return None;
    }
    message.split('`').nth(1)
}

/// Whether `name` is one of the identifiers of the type `ty` (`Point` in `Vec<Point>`).
pub fn names_in_type(ty: &str, name: &str) -> bool {
    ty.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|part| part == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_matched_exactly() {
        let codes = vec!["E0308".to_owned(), "E0425".to_owned()];
        assert!(any_of(&codes, UNRESOLVED));
        assert!(any_of(&codes, WRONG_TYPE));
        assert!(!any_of(&codes, MISSING_TRAIT));
        assert!(!any_of(&["E04251".to_owned()], UNRESOLVED));
    }

    #[test]
    fn the_unresolved_name_is_the_first_quoted_one() {
        let message = "cannot find type `Point` in this scope";
        assert_eq!(unresolved_name(&["E0425".into()], message), Some("Point"));
        assert_eq!(unresolved_name(&["E0308".into()], message), None);
        assert!(names_in_type("Vec<my::Point>", "Point"));
        assert!(!names_in_type("Vec<Points>", "Point"));
    }
}
