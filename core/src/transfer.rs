//! The cells behind `%push`, `%pull`, `%scatter` and `%gather`: pure code generation.
//!
//! A data magic is two small generated cells, one in the kernel's own context and one on the
//! target engines, that call the `rustpx` client crate; values cross as bincode files in the
//! kernel's transfer directory. Types come from evcxr: the local context's for what leaves it,
//! the engines' (as the px compiler last saw them) for what comes back. The engine cells of
//! `%pull` and `%gather` bind no variable, so after the first run the px compiler's cache runs
//! them again without compiling. The local cells are deterministic in the names, types and
//! files too, which lets the kernel's context re-run them (`evaluator::rerun`).

use std::path::Path;

use crate::cell_files::{self, CellFiles};
use crate::magics::TransferKind;
use crate::rustc_codes;
use crate::EngineId;

/// The generated code of one data magic, in the order it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Runs first in the kernel's context (push, scatter: write the files).
    pub local_before: Option<String>,
    /// Runs on the targets (load or save).
    pub engines: String,
    /// Runs last in the kernel's context (pull, gather: read the files).
    pub local_after: Option<String>,
    /// The files the engine cell reads or writes, for engines on other hosts.
    pub engine_files: CellFiles,
}

/// Why a plan cannot be made; the text is the user's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

/// What a plan needs to know.
pub struct Request<'a> {
    pub kind: TransferKind,
    pub names: &'a [String],
    /// The local variable a pull or gather fills.
    pub out: &'a str,
    /// The targets, in target order.
    pub engines: &'a [EngineId],
    /// Pull with a single-int target: a bare value instead of a `Vec` of one.
    pub single: bool,
    /// The type of each of `names` on the side the values leave from.
    pub types: &'a [String],
    /// For push and scatter: whether every target already has each name with that type. The
    /// engine cell then assigns instead of binding, and the px compiler's cache runs it again
    /// without compiling; bindings are `let mut` so that the next transfer can assign.
    pub assign: &'a [bool],
    /// evcxr's `:dep` line for the client crate.
    pub dep: &'a str,
    pub dir: &'a Path,
}

pub fn plan(request: &Request) -> Result<Plan, PlanError> {
    let dep = request.dep;
    let magic = request.kind.magic();
    for (name, ty) in request.names.iter().zip(request.types) {
        if ty.trim_start().starts_with('&') {
            return Err(PlanError(format!(
                "{magic} {name}: `{name}` is a reference (`{ty}`), and a reference cannot cross to another process; move an owned copy instead, e.g. `let {name}_owned = {name}.to_owned();`"
            )));
        }
    }
    let file = |name: &str, what: &str| path_literal(request.dir, &format!("{name}.{what}.bin"));
    let prefix = |name: &str, what: &str| path_literal(request.dir, &format!("{name}.{what}"));
    let per_engine = |name: &str, what: &str| -> String {
        let files: Vec<String> = request
            .engines
            .iter()
            .map(|id| path_literal(request.dir, &format!("{name}.{what}.{id}.bin")))
            .collect();
        format!("&[{}]", files.join(", "))
    };
    let fail = |name: &str| format!(".unwrap_or_else(|e| panic!(\"{magic} {name}: {{e}}\"))");
    // The same files as plain paths; `{engine}` where each engine has its own.
    let raw = |name: &str, what: &str| {
        request
            .dir
            .join(format!("{name}.{what}.bin"))
            .display()
            .to_string()
    };
    let raw_per_engine = |name: &str, what: &str| {
        request
            .dir
            .join(format!("{name}.{what}.{}.bin", cell_files::ENGINE))
            .display()
            .to_string()
    };
    match request.kind {
        TransferKind::Push => {
            let mut local = vec![dep.to_owned()];
            let mut engines = vec![dep.to_owned()];
            for (index, (name, ty)) in request.names.iter().zip(request.types).enumerate() {
                let bind = if request.assign.get(index).copied().unwrap_or(false) {
                    name.to_string()
                } else {
                    format!("let mut {name}: {ty}")
                };
                local.push(format!(
                    "rustpx::save(&{name}, {}){};",
                    file(name, "push"),
                    fail(name)
                ));
                engines.push(format!(
                    "{bind} = rustpx::load({}){};",
                    file(name, "push"),
                    fail(name)
                ));
            }
            Ok(Plan {
                local_before: Some(local.join("\n")),
                engines: engines.join("\n"),
                local_after: None,
                engine_files: CellFiles {
                    inputs: request.names.iter().map(|n| raw(n, "push")).collect(),
                    outputs: Vec::new(),
                },
            })
        }
        TransferKind::Pull => {
            let name = one(request.names)?;
            let ty = one(request.types)?;
            let out = request.out;
            let local = if request.single {
                let file = path_literal(
                    request.dir,
                    &format!(
                        "{name}.pull.{}.bin",
                        request.engines.first().copied().unwrap_or(0)
                    ),
                );
                format!("let {out}: {ty} = rustpx::load({file}){};", fail(name))
            } else {
                format!(
                    "let {out}: Vec<{ty}> = rustpx::collect({}){};",
                    per_engine(name, "pull"),
                    fail(name)
                )
            };
            Ok(Plan {
                local_before: None,
                engines: format!(
                    "{dep}\nrustpx::save(&{name}, &rustpx::engine_path({}).unwrap_or_else(|e| panic!(\"{{e}}\"))){};",
                    prefix(name, "pull"),
                    fail(name)
                ),
                local_after: Some(format!("{dep}\n{local}")),
                engine_files: CellFiles {
                    inputs: Vec::new(),
                    outputs: vec![raw_per_engine(name, "pull")],
                },
            })
        }
        TransferKind::Scatter => {
            let name = one(request.names)?;
            let ty = one(request.types)?;
            let element = vec_element(ty).ok_or_else(|| {
                PlanError(format!(
                    "%scatter splits a Vec, and `{name}` is a `{ty}`; collect it first, e.g. `let {name}: Vec<_> = {name}.into_iter().collect();`"
                ))
            })?;
            let bind = if request.assign.first().copied().unwrap_or(false) {
                name.to_string()
            } else {
                format!("let mut {name}: Vec<{element}>")
            };
            Ok(Plan {
                local_before: Some(format!(
                    "{dep}\nrustpx::scatter(&{name}, {}){};",
                    per_engine(name, "scatter"),
                    fail(name)
                )),
                engines: format!(
                    "{dep}\n{bind} = rustpx::load(&rustpx::engine_path({}).unwrap_or_else(|e| panic!(\"{{e}}\"))){};",
                    prefix(name, "scatter"),
                    fail(name)
                ),
                local_after: None,
                engine_files: CellFiles {
                    inputs: vec![raw_per_engine(name, "scatter")],
                    outputs: Vec::new(),
                },
            })
        }
        TransferKind::Gather => {
            let name = one(request.names)?;
            let ty = one(request.types)?;
            let element = vec_element(ty).ok_or_else(|| {
                PlanError(format!(
                    "%gather concatenates a Vec from each engine, and `{name}` is a `{ty}` there; use %pull {name} for one value per engine"
                ))
            })?;
            Ok(Plan {
                local_before: None,
                engines: format!(
                    "{dep}\nrustpx::save(&{name}, &rustpx::engine_path({}).unwrap_or_else(|e| panic!(\"{{e}}\"))){};",
                    prefix(name, "gather"),
                    fail(name)
                ),
                local_after: Some(format!(
                    "{dep}\nlet {}: Vec<{element}> = rustpx::concat({}){};",
                    request.out,
                    per_engine(name, "gather"),
                    fail(name)
                )),
                engine_files: CellFiles {
                    inputs: Vec::new(),
                    outputs: vec![raw_per_engine(name, "gather")],
                },
            })
        }
    }
}

fn one<T>(items: &[T]) -> Result<&T, PlanError> {
    items
        .first()
        .ok_or_else(|| PlanError("no variable named".into()))
}

/// `E` of `Vec<E>` (also spelled with its path), or `None` for any other type.
pub fn vec_element(ty: &str) -> Option<&str> {
    let ty = ty.trim();
    let inner = ["Vec<", "std::vec::Vec<", "alloc::vec::Vec<"]
        .iter()
        .find_map(|prefix| ty.strip_prefix(prefix))?
        .strip_suffix('>')?;
    // `Vec<A> , Vec<B>` is not one Vec: the brackets must balance inside.
    let mut depth = 0i32;
    for c in inner.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    (depth == 0).then_some(inner.trim())
}

/// A Rust string literal for the file `name` in `dir`.
fn path_literal(dir: &Path, name: &str) -> String {
    format!("{:?}", dir.join(name).to_string_lossy())
}

/// A clear message for a compile error of a generated cell: the type and the missing trait if
/// serde is what failed, `None` to show the compiler's own message.
pub fn explain_compile_error(
    kind: TransferKind,
    name: &str,
    ty: &str,
    codes: &[String],
    message: &str,
    on_engines: bool,
) -> Option<String> {
    let magic = kind.magic();
    let derive = "derive both where the type is defined: `#[derive(serde::Serialize, serde::Deserialize)]` (after `:dep serde = { version = \"1\", features = [\"derive\"] }`)";
    let side = if on_engines {
        "the engines"
    } else {
        "the kernel's context"
    };
    // E0277 names the bound that does not hold (`Point: serde::Serialize`): which serde trait.
    let missing_trait = rustc_codes::any_of(codes, rustc_codes::MISSING_TRAIT);
    if missing_trait && message.contains("Serialize") && !message.contains("Deserialize") {
        return Some(format!(
            "{magic} {name}: `{ty}` cannot leave {side}: it does not implement serde::Serialize; {derive}"
        ));
    }
    if missing_trait && message.contains("Deserialize") {
        return Some(format!(
            "{magic} {name}: `{ty}` cannot arrive in {}: it does not implement serde::Deserialize; {derive}",
            if on_engines { "the engines" } else { "the kernel's context" }
        ));
    }
    if let Some(missing) = rustc_codes::unresolved_name(codes, message)
        .filter(|name| rustc_codes::names_in_type(ty, name))
    {
        let place = if on_engines {
            "on the engines; define it there too (a %%px cell with the same definition)"
        } else {
            "in the kernel's context; define it there too (a plain cell with the same definition)"
        };
        return Some(format!(
            "{magic} {name}: the type `{missing}` is not defined {place}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        kind: TransferKind,
        names: &'a [String],
        types: &'a [String],
        engines: &'a [EngineId],
    ) -> Request<'a> {
        Request {
            kind,
            names,
            out: &names[0],
            engines,
            single: false,
            types,
            assign: &[],
            dep: ":dep rustpx = { path = \"/c\" }",
            dir: Path::new("/t"),
        }
    }

    #[test]
    fn push_saves_locally_then_binds_each_name_with_its_type_on_the_engines() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let types = vec!["u64".to_owned(), "Vec<String>".to_owned()];
        let plan = plan(&request(TransferKind::Push, &names, &types, &[0, 1])).unwrap();
        let local = plan.local_before.unwrap();
        assert!(
            local.contains("rustpx::save(&a, \"/t/a.push.bin\")"),
            "{local}"
        );
        assert!(plan
            .engines
            .contains("let mut b: Vec<String> = rustpx::load(\"/t/b.push.bin\")"));
        assert!(plan.engines.starts_with(":dep rustpx"));
        assert_eq!(plan.local_after, None);
        let mut again = request(TransferKind::Push, &names, &types, &[0, 1]);
        again.assign = &[true, false];
        let engines = super::plan(&again).unwrap().engines;
        assert!(engines.contains("\na = rustpx::load("), "{engines}");
        assert!(engines.contains("let mut b: Vec<String> = "), "{engines}");
    }

    #[test]
    fn pull_collects_in_target_order_or_a_bare_value_for_a_single_target() {
        let names = vec!["x".to_owned()];
        let types = vec!["i32".to_owned()];
        let plan = plan(&request(TransferKind::Pull, &names, &types, &[2, 0])).unwrap();
        let local = plan.local_after.unwrap();
        assert!(
            local.contains(
                "let x: Vec<i32> = rustpx::collect(&[\"/t/x.pull.2.bin\", \"/t/x.pull.0.bin\"])"
            ),
            "{local}"
        );
        assert!(
            !plan.engines.contains("let "),
            "the engine side must stay cacheable"
        );
        let mut single = request(TransferKind::Pull, &names, &types, &[3]);
        single.single = true;
        let local = super::plan(&single).unwrap().local_after.unwrap();
        assert!(
            local.contains("let x: i32 = rustpx::load(\"/t/x.pull.3.bin\")"),
            "{local}"
        );
    }

    #[test]
    fn scatter_and_gather_need_a_vec() {
        let names = vec!["v".to_owned()];
        let types = vec!["Vec<(u8, String)>".to_owned()];
        let scatter = plan(&request(TransferKind::Scatter, &names, &types, &[0, 1])).unwrap();
        assert!(scatter.engines.contains(
            "let mut v: Vec<(u8, String)> = rustpx::load(&rustpx::engine_path(\"/t/v.scatter\")"
        ));
        let gather = plan(&request(TransferKind::Gather, &names, &types, &[1, 0])).unwrap();
        assert!(gather
            .local_after
            .unwrap()
            .contains("rustpx::concat(&[\"/t/v.gather.1.bin\", \"/t/v.gather.0.bin\"])"));
        let not_vec = vec!["String".to_owned()];
        let error = plan(&request(TransferKind::Scatter, &names, &not_vec, &[0])).unwrap_err();
        assert!(error.0.contains("splits a Vec"), "{}", error.0);
    }

    #[test]
    fn references_are_refused_with_the_owned_alternative() {
        let names = vec!["s".to_owned()];
        let types = vec!["&str".to_owned()];
        let error = plan(&request(TransferKind::Push, &names, &types, &[0])).unwrap_err();
        assert!(error.0.contains("is a reference (`&str`)"), "{}", error.0);
        assert!(error.0.contains("s.to_owned()"), "{}", error.0);
    }

    #[test]
    fn vec_elements_are_found_only_for_one_balanced_vec() {
        assert_eq!(vec_element("Vec<u8>"), Some("u8"));
        assert_eq!(vec_element("std::vec::Vec<Vec<u8>>"), Some("Vec<u8>"));
        assert_eq!(
            vec_element("Vec<HashMap<String, Vec<u8>>>"),
            Some("HashMap<String, Vec<u8>>")
        );
        assert_eq!(vec_element("Vec<u8>, Vec<u8>"), None);
        assert_eq!(vec_element("VecDeque<u8>"), None);
        assert_eq!(vec_element("Option<Vec<u8>>"), None);
    }

    #[test]
    fn serde_errors_name_the_type_and_the_trait() {
        let text = explain_compile_error(
            TransferKind::Push,
            "h",
            "Handle",
            &codes("E0277"),
            "the trait bound `Handle: serde::Serialize` is not satisfied",
            false,
        )
        .unwrap();
        assert!(
            text.contains("`Handle`") && text.contains("serde::Serialize"),
            "{text}"
        );
        let text = explain_compile_error(
            TransferKind::Push,
            "p",
            "Point",
            &codes("E0425"),
            "cannot find type `Point` in this scope",
            true,
        )
        .unwrap();
        assert!(
            text.contains("`Point` is not defined on the engines"),
            "{text}"
        );
        let mismatched = codes("E0308");
        assert_eq!(
            explain_compile_error(
                TransferKind::Push,
                "x",
                "u8",
                &mismatched,
                "mismatched types",
                true
            ),
            None
        );
        // The wording alone decides nothing: without its code, this is not a missing type.
        let uncoded = "cannot find type `Point` in this scope";
        assert_eq!(
            explain_compile_error(TransferKind::Push, "p", "Point", &[], uncoded, true),
            None
        );
    }

    fn codes(code: &str) -> Vec<String> {
        vec![code.to_owned()]
    }
}
