//! The structs and enums each context defined, so that two types with the same name and different
//! definitions are told apart before a value of one is decoded as the other.
//!
//! The Rust API checks types by name, without their paths (a type defined in a cell is
//! `ctx::Point` in the kernel's context and `code_7::Point` on an engine). A `Point { x: i32 }`
//! in a plain cell and a `Point { x: f64, y: f64 }` in a `%%px` cell would pass as one type, and
//! bincode, which carries no field names, could read one as the other. So the kernel keeps the
//! text of every struct and enum each context defined (the plain context's from its cells, each
//! engine's from the `%px` cells that ran on it without error) and compares the definitions a
//! call's types reach, following the types their fields name. Only what serialization sees is
//! compared: the items' tokens without comments, visibility and `#[derive]` lists (so a `pub`
//! or a `Debug` more on one side is no difference, while a `#[serde(…)]` attribute is).

use std::collections::{BTreeSet, HashMap, VecDeque};

use ra_ap_syntax::{ast, AstNode, NodeOrToken, SyntaxKind};

/// The structs and enums one context has defined, by name, as normalized text.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Definitions(HashMap<String, String>);

impl Definitions {
    /// Takes in the definitions of a cell that ran: a later definition replaces an earlier one.
    pub fn note(&mut self, code: &str) {
        self.0.extend(definitions_in(code));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A type whose definitions differ: its name, this side's text and the other side's.
#[derive(Debug, PartialEq)]
pub struct Difference {
    pub name: String,
    pub ours: String,
    pub theirs: String,
}

/// The first type reachable from `type_names` (`std::any::type_name`s, paths and generics
/// included) that both sides define, differently. Types only one side defines (or neither: std,
/// a crate's) are left to the name check.
pub fn first_difference(
    type_names: &[&str],
    ours: &Definitions,
    theirs: &Definitions,
) -> Option<Difference> {
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<String> = type_names.iter().flat_map(|n| identifiers(n)).collect();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let (Some(mine), Some(other)) = (ours.get(&name), theirs.get(&name)) else {
            continue;
        };
        if mine != other {
            return Some(Difference {
                name,
                ours: mine.to_owned(),
                theirs: other.to_owned(),
            });
        }
        queue.extend(identifiers(mine));
    }
    None
}

/// The words of a type name or a definition that may name a type.
fn identifiers(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| {
            word.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        })
        .map(str::to_owned)
}

/// The structs and enums `code` defines at its top level, by name, as normalized text. Code
/// that does not parse defines nothing here (evcxr refuses it too).
fn definitions_in(code: &str) -> Vec<(String, String)> {
    let Some(body) = crate::cell_text::statements_of(code) else {
        return Vec::new();
    };
    body.statements()
        .filter_map(|statement| match statement {
            ast::Stmt::Item(item) => Some(item),
            _ => None,
        })
        .filter_map(|item| {
            let name = match &item {
                ast::Item::Struct(s) => ast::HasName::name(s)?,
                ast::Item::Enum(e) => ast::HasName::name(e)?,
                _ => return None,
            };
            Some((name.text().to_string(), normalized(item.syntax())))
        })
        .collect()
}

/// The item's tokens, one space apart, without comments, visibility, `#[derive]` lists and
/// trailing commas.
fn normalized(item: &ra_ap_syntax::SyntaxNode) -> String {
    let skipped: Vec<_> = item
        .descendants()
        .filter(|node| {
            node.kind() == SyntaxKind::VISIBILITY
                || ast::Attr::cast(node.clone()).is_some_and(|attr| {
                    attr.path()
                        .is_some_and(|path| path.syntax().text() == "derive")
                })
        })
        .map(|node| node.text_range())
        .collect();
    let mut words: Vec<String> = Vec::new();
    for element in item.descendants_with_tokens() {
        let NodeOrToken::Token(token) = element else {
            continue;
        };
        let inside_skipped = skipped
            .iter()
            .any(|range| range.contains_range(token.text_range()));
        if token.kind().is_trivia() || inside_skipped {
            continue;
        }
        let text = token.text();
        if matches!(text, "}" | ")" | "]" | ">") && words.last().is_some_and(|w| w == ",") {
            words.pop();
        }
        words.push(text.to_owned());
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defined(cells: &[&str]) -> Definitions {
        let mut definitions = Definitions::default();
        for cell in cells {
            definitions.note(cell);
        }
        definitions
    }

    #[test]
    fn comments_visibility_and_derives_are_no_difference_but_fields_and_serde_attributes_are() {
        let plain = defined(&[
            "#[derive(serde::Serialize, serde::Deserialize, Debug)]\npub struct Point { pub x: i32 } // here",
        ]);
        let same = defined(&[
            "#[derive(Deserialize, Serialize)]\nstruct Point {\n    /// x\n    x: i32,\n}",
        ]);
        assert_eq!(first_difference(&["ctx::Point"], &plain, &same), None);
        let wider = defined(&["#[derive(Serialize, Deserialize)] struct Point { x: i64 }"]);
        assert_eq!(
            first_difference(&["alloc::vec::Vec<ctx::Point>"], &plain, &wider),
            Some(Difference {
                name: "Point".into(),
                ours: "struct Point { x : i32 }".into(),
                theirs: "struct Point { x : i64 }".into(),
            })
        );
        let renamed = defined(&["#[serde(rename = \"P\")] struct Point { x: i32 }"]);
        assert!(first_difference(&["code_1::Point"], &plain, &renamed).is_some());
    }

    #[test]
    fn types_reached_through_fields_are_compared_and_later_cells_replace_earlier_ones() {
        let plain = defined(&[
            "enum Kind { A, B(u8) }",
            "struct Shape { kind: Kind, size: u32 }\nlet s = 1;",
        ]);
        let engine = defined(&["enum Kind { A, B(u16) }\nstruct Shape { kind: Kind, size: u32 }"]);
        let difference = first_difference(&["(u64, ctx::Shape)"], &plain, &engine).unwrap();
        assert_eq!(difference.name, "Kind");
        let fixed = defined(&[
            "enum Kind { A, B(u16) }\nstruct Shape { kind: Kind, size: u32 }",
            "enum Kind { A, B(u8) }",
        ]);
        assert_eq!(first_difference(&["ctx::Shape"], &plain, &fixed), None);
    }

    #[test]
    fn types_one_side_lacks_and_cells_that_do_not_parse_are_left_to_the_names() {
        let plain = defined(&[
            "struct Only { a: u8 }",
            ":dep serde = \"1\"",
            "struct Broken {",
        ]);
        assert_eq!(plain.get("Broken"), None);
        assert_eq!(
            first_difference(&["Only", "u64"], &plain, &Definitions::default()),
            None
        );
    }
}
