//! Type names across the plain context and the engines, for the direct view's `push`, `pull`,
//! `scatter`, `gather` and `apply`.
//!
//! A plain cell knows its values' types only as `std::any::type_name` text, which spells the
//! *defining* path (`alloc::vec::Vec<alloc::string::String>`, `ctx::Point`), often through
//! private modules (`std::collections::hash::map::HashMap`) no cell can write. The kernel needs
//! a spelling an engine cell compiles, so [`for_engines`] maps std's private paths to public
//! ones and cuts the evcxr crate (`ctx`, or `code_N` on an engine) off types that cells define;
//! [`short`] cuts every path, to compare a caller's type with an engine's as evcxr spells it.

/// Every path cut to its last segment, spaces removed: `alloc::vec::Vec<ctx::Point>` becomes
/// `Vec<Point>`. Two types with equal short names are taken as the same type.
pub fn short(name: &str) -> String {
    map_paths(name, |path| {
        path.rsplit("::").next().unwrap_or(path).to_owned()
    })
    .chars()
    .filter(|c| !c.is_whitespace())
    .collect()
}

/// How an engine cell spells the type that `std::any::type_name` called `name`; an error says
/// why it cannot be spelled and what to send instead.
///
/// A slice or `str` (from `push(name, &v[..])`) becomes the owned `Vec` or `String`, whose
/// bincode is the same. References, closures and other unnameable types are refused.
pub fn for_engines(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.contains('&') {
        return Err(format!(
            "`{name}` holds a reference, which cannot cross to another process; send an owned value (e.g. `.to_owned()`, `.to_vec()`)"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || "_:<>,()[]; ".contains(*c)))
    {
        return Err(format!(
            "`{name}` cannot be named in an engine cell (it contains `{bad}`: a closure, a function or an anonymous type); send a value of a named type"
        ));
    }
    check_brackets(name)?;
    let spelled = map_paths(name, public_path);
    if spelled == "str" {
        return Ok("String".into());
    }
    if let Some(element) = spelled
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .filter(|inner| check_brackets(inner).is_ok() && !top_level_semicolon(inner))
    {
        return Ok(format!("Vec<{element}>"));
    }
    Ok(spelled)
}

/// Brackets balance and `;` appears only inside `[...]` (an array's length): the spelling is
/// one type, never a statement.
fn check_brackets(name: &str) -> Result<(), String> {
    let mut open = Vec::new();
    for c in name.chars() {
        match c {
            '<' | '(' | '[' => open.push(c),
            '>' | ')' | ']' => {
                let expected = match c {
                    '>' => '<',
                    ')' => '(',
                    _ => '[',
                };
                if open.pop() != Some(expected) {
                    return Err(format!(
                        "`{name}` is not one type (its brackets do not balance)"
                    ));
                }
            }
            ';' if open.last() != Some(&'[') => {
                return Err(format!("`{name}` is not one type (a `;` outside an array)"));
            }
            _ => {}
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not one type (its brackets do not balance)"
        ))
    }
}

fn top_level_semicolon(inner: &str) -> bool {
    let mut depth = 0i32;
    for c in inner.chars() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ';' if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// Calls `map` on every path (`a::b::C`, `u8`) of a type name and keeps everything else.
fn map_paths(name: &str, map: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if !word.is_empty() {
                out.push_str(&map(&word));
                word.clear();
            }
            out.push(c);
        }
    }
    if !word.is_empty() {
        out.push_str(&map(&word));
    }
    out
}

/// std's public name of a type that `type_name` spells with its defining (maybe private) path;
/// a type defined in a cell loses its evcxr crate; other crates' paths stay.
fn public_path(path: &str) -> String {
    let mut segments = path.split("::");
    let first = segments.next().unwrap_or("");
    let last = path.rsplit("::").next().unwrap_or(path);
    if path == last {
        return path.to_owned();
    }
    if first == "ctx" || is_engine_crate(first) {
        return path[first.len() + 2..].to_owned();
    }
    if !matches!(first, "std" | "core" | "alloc") {
        return path.to_owned();
    }
    let module = match last {
        "Vec" | "String" | "Box" | "Option" | "Result" => return last.to_owned(),
        "HashMap" | "HashSet" | "BTreeMap" | "BTreeSet" | "VecDeque" | "BinaryHeap"
        | "LinkedList" => "collections",
        "Arc" | "Mutex" | "RwLock" => "sync",
        "Rc" => "rc",
        "Cow" => "borrow",
        "PathBuf" => "path",
        "OsString" | "CString" => "ffi",
        "Duration" | "SystemTime" => "time",
        "Range" | "RangeInclusive" => "ops",
        "Reverse" => "cmp",
        "Wrapping" | "NonZero" | "Saturating" => "num",
        "Cell" | "RefCell" => "cell",
        "PhantomData" => "marker",
        "IpAddr" | "Ipv4Addr" | "Ipv6Addr" | "SocketAddr" | "SocketAddrV4" | "SocketAddrV6" => {
            "net"
        }
        // core and alloc are re-exported by std under the same module names.
        _ => return format!("std{}", &path[first.len()..]),
    };
    format!("std::{module}::{last}")
}

/// `code_N`: the crate of a cell compiled for the engines.
fn is_engine_crate(segment: &str) -> bool {
    segment
        .strip_prefix("code_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_types_get_their_public_names() {
        let cases = [
            ("u64", "u64"),
            ("alloc::vec::Vec<alloc::string::String>", "Vec<String>"),
            (
                "std::collections::hash::map::HashMap<alloc::string::String, i32>",
                "std::collections::HashMap<String, i32>",
            ),
            (
                "alloc::collections::btree::map::BTreeMap<u8, alloc::vec::Vec<f64>>",
                "std::collections::BTreeMap<u8, Vec<f64>>",
            ),
            (
                "core::option::Option<alloc::boxed::Box<str>>",
                "Option<Box<str>>",
            ),
            ("(u8, [f64; 3], bool)", "(u8, [f64; 3], bool)"),
            ("core::time::Duration", "std::time::Duration"),
            ("std::ffi::os_str::OsString", "std::ffi::OsString"),
            ("alloc::sync::Arc<u8>", "std::sync::Arc<u8>"),
            ("core::cmp::Ordering", "std::cmp::Ordering"),
        ];
        for (name, spelled) in cases {
            assert_eq!(for_engines(name).as_deref(), Ok(spelled), "{name}");
        }
    }

    #[test]
    fn cell_types_lose_their_crate_and_other_crates_keep_theirs() {
        assert_eq!(
            for_engines("alloc::vec::Vec<ctx::Point>").as_deref(),
            Ok("Vec<Point>")
        );
        assert_eq!(
            for_engines("code_12::geo::Point").as_deref(),
            Ok("geo::Point")
        );
        assert_eq!(
            for_engines("num_complex::Complex<f64>").as_deref(),
            Ok("num_complex::Complex<f64>")
        );
    }

    #[test]
    fn slices_and_str_become_owned_and_references_are_refused() {
        assert_eq!(for_engines("[u64]").as_deref(), Ok("Vec<u64>"));
        assert_eq!(for_engines("str").as_deref(), Ok("String"));
        assert_eq!(for_engines("[u8; 4]").as_deref(), Ok("[u8; 4]"));
        let error = for_engines("&str").unwrap_err();
        assert!(error.contains("reference"), "{error}");
        let error = for_engines("ctx::run::{{closure}}").unwrap_err();
        assert!(error.contains("closure"), "{error}");
        assert!(for_engines("u8; evil(); let x: u8").is_err());
        assert!(for_engines("Vec<u8").is_err());
    }

    #[test]
    fn short_names_compare_across_contexts() {
        assert_eq!(short("alloc::vec::Vec<ctx::Point>"), "Vec<Point>");
        assert_eq!(short("Vec<code_3::Point>"), short("Vec<Point>"));
        assert_eq!(
            short("std::collections::hash::map::HashMap<alloc::string::String, i32>"),
            short("HashMap<String, i32>")
        );
        assert_ne!(short("Vec<u32>"), short("Vec<u64>"));
    }
}
