//! The direct view's data calls of the Rust API: `push`, `pull`, `scatter`, `gather`. Values
//! travel in the request or the reply (the plain cell that sent them is busy, so nothing runs
//! in the kernel's context); on the engines they are bound and read by the very cells `%push`,
//! `%scatter`, `%pull` and `%gather` run ([`transfer::plan`]), so both leave the same
//! variables. Types come by name from the caller and are spelled for the engines by
//! [`type_names::for_engines`]; what is read back must have the caller's type on every engine.

use std::path::{Path, PathBuf};

use rustpx_client::api_payload::{decode_named, decode_parts, encode_parts};
use rustpx_client::type_names;
use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;

use super::super::api::{Kind, Reply, Request};
use super::super::magics::TransferKind;
use super::super::rustc_codes;
use super::super::transfer;
use super::PxService;
use crate::px::client_crate;

/// The most a reply carries: every engine's value of one `pull` or `gather`.
const MAX_REPLY: u64 = 1 << 30;

/// What every data call needs: its engines, the transfer directory, the client crate's line.
struct Setup {
    engines: Vec<EngineId>,
    dir: PathBuf,
    dep: String,
}

impl PxService {
    /// The call's engines, after checking that its `types` are defined alike here and there.
    async fn api_data_setup(
        &mut self,
        cell: &WireMessage,
        targets: Option<&[EngineId]>,
        (what, types): (&str, &[&str]),
    ) -> Result<Setup, String> {
        let engines = self.api_targets(cell, targets).await?;
        self.check_definitions(what, types, &engines)?;
        let dir = self.transfer_dir().map_err(|r| r.evalue)?;
        let dep = client_crate::dep_line().map_err(|e| e.to_string())?;
        self.ensure_client_engines(&dep, &engines, "the Rust API")
            .await
            .map_err(|r| r.evalue)?;
        Ok(Setup { engines, dir, dep })
    }

    /// `push`: each named value becomes that variable on every target, with its type.
    pub(super) async fn api_push(
        &mut self,
        cell: &WireMessage,
        request: Request,
    ) -> Result<Reply, String> {
        let entries = decode_named(&request.payload)
            .map_err(|why| format!("push: a malformed request: {why}"))?;
        if entries.is_empty() {
            return Err("push: no value to push".into());
        }
        let mut names = Vec::new();
        let mut types = Vec::new();
        for (name, type_name, _) in &entries {
            check_name("push", name)?;
            if names.contains(name) {
                return Err(format!("push: `{name}` is given twice"));
            }
            let spelled =
                type_names::for_engines(type_name).map_err(|why| format!("push {name}: {why}"))?;
            names.push(name.clone());
            types.push(spelled);
        }
        let pushed: Vec<&str> = entries.iter().map(|(_, t, _)| t.as_str()).collect();
        let setup = self
            .api_data_setup(cell, request.targets.as_deref(), ("push", &pushed))
            .await?;
        let files = names
            .iter()
            .zip(&entries)
            .map(|(name, (_, _, value))| (setup.dir.join(format!("{name}.push.bin")), &value[..]))
            .collect();
        self.write_and_bind(TransferKind::Push, &names, &types, setup, files)
            .await
    }

    /// `scatter`: part `i` of the payload becomes the `Vec` named `function` on target `i`.
    pub(super) async fn api_scatter(
        &mut self,
        cell: &WireMessage,
        request: Request,
    ) -> Result<Reply, String> {
        let name = request.function.trim().to_owned();
        check_name("scatter", &name)?;
        let element = type_names::for_engines(&request.argument_type)
            .map_err(|why| format!("scatter {name}: {why}"))?;
        let parts = decode_parts(&request.payload)
            .map_err(|why| format!("scatter: a malformed request: {why}"))?;
        let checked = (format!("scatter {name}"), [request.argument_type.as_str()]);
        let setup = self
            .api_data_setup(cell, request.targets.as_deref(), (&checked.0, &checked.1))
            .await?;
        if parts.len() != setup.engines.len() {
            return Err(format!(
                "scatter {name}: {} parts for {} engines; the engines changed during the call, scatter again",
                parts.len(),
                setup.engines.len()
            ));
        }
        let files = setup
            .engines
            .iter()
            .zip(&parts)
            .map(|(id, part)| {
                (
                    setup.dir.join(format!("{name}.scatter.{id}.bin")),
                    &part[..],
                )
            })
            .collect();
        let types = [format!("Vec<{element}>")];
        self.write_and_bind(TransferKind::Scatter, &[name], &types, setup, files)
            .await
    }

    /// Writes each file of a push or scatter, has the engines bind them, and removes them
    /// whatever happened; the reply names the engines.
    async fn write_and_bind(
        &mut self,
        kind: TransferKind,
        names: &[String],
        types: &[String],
        setup: Setup,
        files: Vec<(PathBuf, &[u8])>,
    ) -> Result<Reply, String> {
        let paths: Vec<PathBuf> = files.iter().map(|(path, _)| path.clone()).collect();
        let written = files.iter().try_for_each(|(path, bytes)| {
            std::fs::write(path, bytes).map_err(|e| {
                format!(
                    "{}: cannot write {}: {e}",
                    &kind.magic()[1..],
                    path.display()
                )
            })
        });
        let bound = match written {
            Ok(()) => self.bind_on_engines(kind, names, types, &setup).await,
            Err(why) => Err(why),
        };
        remove_files(&paths);
        bound?;
        Ok(Reply {
            ids: setup.engines,
            ..Reply::default()
        })
    }

    /// Runs the engine cell of a push or scatter whose files are written; binds anew when the
    /// variable cannot be assigned (as `%push` does), and explains a type the engines lack.
    async fn bind_on_engines(
        &mut self,
        kind: TransferKind,
        names: &[String],
        types: &[String],
        setup: &Setup,
    ) -> Result<(), String> {
        let assign: Vec<bool> = names
            .iter()
            .zip(types)
            .map(|(name, ty)| self.has_everywhere(name, ty, &setup.engines))
            .collect();
        let mut outcome = self.run_bind(kind, names, types, &assign, setup).await;
        let cannot_assign = |failure: &(Vec<String>, String)| {
            rustc_codes::any_of(&failure.0, rustc_codes::ASSIGNED_TWICE)
                || rustc_codes::unresolved_name(&failure.0, &failure.1)
                    .is_some_and(|name| names.iter().any(|n| n == name))
        };
        if assign.contains(&true) && outcome.as_ref().is_err_and(cannot_assign) {
            outcome = self.run_bind(kind, names, types, &[], setup).await;
        }
        outcome.map_err(|(_, message)| message)
    }

    /// One run of the binding cell; an error keeps the compiler's codes for a retry.
    async fn run_bind(
        &mut self,
        kind: TransferKind,
        names: &[String],
        types: &[String],
        assign: &[bool],
        setup: &Setup,
    ) -> Result<(), (Vec<String>, String)> {
        let plan = transfer::plan(&transfer::Request {
            kind,
            names,
            out: &names[0],
            engines: &setup.engines,
            single: false,
            types,
            assign,
            dep: &setup.dep,
            dir: &setup.dir,
        })
        .map_err(|error| (Vec::new(), api_words(&error.0)))?;
        self.run_on_targets(&plan.engines, &setup.engines, plan.engine_files)
            .await
            .map_err(|failures| {
                let (_, first) = &failures[0];
                let explained = names.iter().zip(types).find_map(|(name, ty)| {
                    transfer::explain_compile_error(
                        kind,
                        name,
                        ty,
                        &first.codes,
                        &first.evalue,
                        true,
                    )
                });
                let ids: Vec<String> = failures.iter().map(|(id, _)| id.to_string()).collect();
                let message = match explained {
                    Some(text) => api_words(&text),
                    None => format!(
                        "{} failed on engine {}: {}",
                        api_words(kind.magic()),
                        ids.join(", "),
                        first.summary()
                    ),
                };
                (first.codes.clone(), message)
            })
    }

    /// Whether every engine has `name` with exactly the type `ty` (then it is assigned, and
    /// the cell compiled for the last push runs again without compiling).
    fn has_everywhere(&self, name: &str, ty: &str, engines: &[EngineId]) -> bool {
        let Ok(m) = self.machinery() else {
            return false;
        };
        engines
            .iter()
            .all(|&id| m.hub.variable_type(id, name).as_deref() == Some(ty))
    }

    /// `pull` and `gather`: each target's variable `function`, checked against the caller's
    /// type, saved by the engines and sent back in target order.
    pub(super) async fn api_fetch(
        &mut self,
        cell: &WireMessage,
        request: Request,
    ) -> Result<Reply, String> {
        let gather = request.kind == Kind::Gather;
        let (what, kind) = if gather {
            ("gather", TransferKind::Gather)
        } else {
            ("pull", TransferKind::Pull)
        };
        let name = request.function.trim().to_owned();
        check_name(what, &name)?;
        let checked = (format!("{what} {name}"), [request.result_type.as_str()]);
        let setup = self
            .api_data_setup(cell, request.targets.as_deref(), (&checked.0, &checked.1))
            .await?;
        let ty = self.fetched_type(what, &name, &request.result_type, &setup.engines)?;
        let plan = transfer::plan(&transfer::Request {
            kind,
            names: std::slice::from_ref(&name),
            out: &name,
            engines: &setup.engines,
            single: false,
            types: std::slice::from_ref(&ty),
            assign: &[],
            dep: &setup.dep,
            dir: &setup.dir,
        })
        .map_err(|error| api_words(&error.0))?;
        let files: Vec<PathBuf> = setup
            .engines
            .iter()
            .map(|id| setup.dir.join(format!("{name}.{what}.{id}.bin")))
            .collect();
        remove_files(&files);
        let ran = self
            .run_on_targets(&plan.engines, &setup.engines, plan.engine_files)
            .await;
        let read = match ran {
            Ok(()) => read_bounded(what, &name, &files, &setup.engines),
            Err(failures) => {
                let (_, first) = &failures[0];
                let explained = transfer::explain_compile_error(
                    kind,
                    &name,
                    &ty,
                    &first.codes,
                    &first.evalue,
                    true,
                );
                let lines: Vec<String> = failures
                    .iter()
                    .map(|(id, error)| format!("[{id}:{what}] {}", error.summary()))
                    .collect();
                Err(match explained {
                    Some(text) => api_words(&text),
                    None => format!("{what} {name} failed: {}", lines.join("; ")),
                })
            }
        };
        remove_files(&files);
        Ok(Reply {
            ids: setup.engines,
            payload: encode_parts(&read?),
            ..Reply::default()
        })
    }

    /// The type of `name` on every engine, as evcxr spells it, when it is the caller's
    /// (`wanted`, the element type for a gather); otherwise an error naming the engine, the
    /// variable and both types.
    fn fetched_type(
        &self,
        what: &str,
        name: &str,
        wanted: &str,
        engines: &[EngineId],
    ) -> Result<String, String> {
        let m = self.machinery().map_err(|r| r.evalue)?;
        let wanted_short = type_names::short(wanted);
        let mut found: Option<String> = None;
        let mut missing = Vec::new();
        for &id in engines {
            let Some(ty) = m.hub.variable_type(id, name) else {
                missing.push(id.to_string());
                continue;
            };
            let element = if what == "gather" {
                transfer::vec_element(&ty).ok_or_else(|| {
                    format!(
                        "TypeError: gather {name}: `{name}` is a `{ty}` on engine {id}, not a Vec; pull it instead (pull_sync::<{ty}>)"
                    )
                })?
            } else {
                ty.as_str()
            };
            if type_names::short(element) != wanted_short {
                let asked = if what == "gather" {
                    format!("Vec<{wanted_short}>")
                } else {
                    wanted_short
                };
                return Err(format!(
                    "TypeError: {what} {name}: `{name}` is a `{ty}` on engine {id}, but this call asks for `{asked}`; call {what}_sync::<{element}>"
                ));
            }
            found.get_or_insert(ty);
        }
        if !missing.is_empty() {
            return Err(format!(
                "NameError: {what} {name}: name '{name}' is not defined on engine {}",
                missing.join(", ")
            ));
        }
        found.ok_or_else(|| format!("{what} {name}: the view selects no engine"))
    }
}

/// A variable name is an identifier: it is written into generated cells.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    if starts && chars.all(|c| c.is_alphanumeric() || c == '_') && name != "_" {
        return Ok(());
    }
    Err(format!(
        "{what}: `{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
    ))
}

/// The data magics' messages, worded for the API's calls (`%push x:` becomes `push x:`).
fn api_words(text: &str) -> String {
    text.strip_prefix('%').unwrap_or(text).to_owned()
}

/// Each engine's file, after checking that together they fit in one reply.
fn read_bounded(
    what: &str,
    name: &str,
    files: &[PathBuf],
    engines: &[EngineId],
) -> Result<Vec<Vec<u8>>, String> {
    let mut total = 0u64;
    for (file, id) in files.iter().zip(engines) {
        let len = std::fs::metadata(file)
            .map_err(|e| format!("{what} {name}: engine {id}'s value did not arrive: {e}"))?
            .len();
        total = total.saturating_add(len);
        if total > MAX_REPLY {
            return Err(format!(
                "{what} {name}: the values take more than the {} MiB one reply carries (engine {id} brings it to {total} bytes); {what} from fewer engines at a time with direct_view(ids)",
                MAX_REPLY >> 20
            ));
        }
    }
    files
        .iter()
        .zip(engines)
        .map(|(file, id)| {
            read_at_most(file, MAX_REPLY)
                .map_err(|e| format!("{what} {name}: engine {id}'s value: {e}"))
        })
        .collect()
}

/// A file's bytes, refusing one that grew past `max` since it was measured.
fn read_at_most(file: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other("the file is over the limit"));
    }
    Ok(bytes)
}

/// The transfer's files hold copies of the user's values: none stays behind.
fn remove_files(files: &[PathBuf]) {
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identifiers_name_variables() {
        assert!(check_name("push", "x_1").is_ok());
        assert!(check_name("push", "données").is_ok());
        for bad in ["", "_", "1x", "x = 1; evil()", "a-b", "x\n"] {
            let error = check_name("push", bad).unwrap_err();
            assert!(error.contains("is not a variable name"), "{bad}: {error}");
        }
    }

    #[test]
    fn replies_over_the_limit_are_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("rustpx-api-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("v.bin");
        std::fs::write(&file, [1, 2, 3]).unwrap();
        let read = read_bounded("pull", "v", std::slice::from_ref(&file), &[4]).unwrap();
        assert_eq!(read, vec![vec![1, 2, 3]]);
        let error = read_bounded("pull", "v", &[dir.join("none.bin")], &[2]).unwrap_err();
        assert!(error.contains("engine 2's value did not arrive"), "{error}");
        assert!(read_at_most(&file, 2).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
