//! Running `%push`, `%pull`, `%scatter` and `%gather`: the generated cells of
//! [`super::super::transfer`] in the kernel's context and on the targets, in order, with each
//! failure reported on the side and engine where it happened.

use std::path::PathBuf;
use std::time::Instant;

use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;
use tokio::sync::mpsc;

use super::super::cell_files::CellFiles;
use super::super::client_crate;
use super::super::compiler::CompileJob;
use super::super::hub::CellEvent;
use super::super::magics::{Transfer, TransferKind};
use super::super::records::{CellRecord, EngineError};
use super::super::rustc_codes;
use super::super::targets::{self, Targets};
use super::super::transfer::{self, Plan, Request};
use super::{lock, usage, PxService};
use crate::evaluator::{ErrorReport, Evaluator};
use rustpx_core::ErrorKind;

pub(super) fn transfer_error(evalue: String, traceback: Vec<String>) -> ErrorReport {
    ErrorReport::new(ErrorKind::Transfer, evalue).with_traceback(traceback)
}

/// What every data magic and `%pxmap` needs before it runs.
pub(super) struct Prepared {
    /// The targets, in target order.
    pub engines: Vec<EngineId>,
    /// A single-int target (`-t 1`).
    pub single: bool,
    pub dir: PathBuf,
    /// evcxr's `:dep` line for the client crate.
    pub dep: String,
}

impl PxService {
    /// Resolves the targets (starting the pool if needed), creates the transfer directory and
    /// makes sure both contexts have the client crate, saying so the first time.
    pub(super) async fn prepare_data_magic(
        &mut self,
        request: &WireMessage,
        targets: Option<&Targets>,
        magic: &str,
        evaluator: &Evaluator,
    ) -> Result<Prepared, ErrorReport> {
        let chosen = targets
            .cloned()
            .unwrap_or_else(|| self.config.targets.clone());
        let live = self.ensure_engines(request).await?;
        let engines = targets::resolve(&chosen, &live)
            .map_err(|missing| usage(format!("No such engine: {}", missing.0)))?;
        if engines.is_empty() {
            return Err(usage(format!(
                "the targets {chosen} select no engine (live engines: {live:?})"
            )));
        }
        let dir = self.transfer_dir()?;
        let dep = client_crate::dep_line().map_err(|error| {
            transfer_error(
                format!("cannot write the rustpx client crate to the cache directory: {error}"),
                vec![],
            )
        })?;
        if !self.client_local {
            self.say(
                request,
                &format!(
                    "{magic}: compiling the rustpx client crate with serde and bincode, in the kernel and for the engines (first use only)…"
                ),
            );
        }
        self.ensure_client(evaluator, &dep, &engines, magic).await?;
        Ok(Prepared {
            engines,
            single: matches!(chosen, Targets::Single(_)),
            dir,
            dep,
        })
    }

    /// `%pxmap` streams chunks through this host's `/dev/shm` while it runs, which an engine on
    /// another host cannot see: refuse it up front, naming the engines, rather than fail on each
    /// engine with a missing file. (The other data magics send their files with the run.)
    pub(super) fn require_shared_files(
        &self,
        engines: &[EngineId],
        magic: &str,
    ) -> Result<(), ErrorReport> {
        let m = self.machinery()?;
        let remote: Vec<EngineId> = {
            let hub = lock(&m.hub);
            engines
                .iter()
                .copied()
                .filter(|id| hub.engine(*id).is_some_and(|e| !e.shares_files))
                .collect()
        };
        if remote.is_empty() {
            return Ok(());
        }
        let list = remote
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Err(transfer_error(
            format!(
                "{magic} streams values through this host's /dev/shm, which engines {list} (on other hosts) cannot read: target engines on this host with -t, or move the values with %scatter and run the function with %px"
            ),
            vec![],
        ))
    }

    /// Runs one data magic; `evaluator` is the kernel's own context.
    pub(super) async fn transfer(
        &mut self,
        request: &WireMessage,
        magic: &Transfer,
        evaluator: &Evaluator,
    ) -> Result<(), ErrorReport> {
        let started = Instant::now();
        let Prepared {
            engines,
            single,
            dir,
            dep,
        } = self
            .prepare_data_magic(
                request,
                magic.targets.as_ref(),
                magic.kind.magic(),
                evaluator,
            )
            .await?;
        let types = match magic.kind {
            TransferKind::Push | TransferKind::Scatter => {
                local_types(evaluator, &magic.names).await?
            }
            TransferKind::Pull | TransferKind::Gather => {
                vec![self.engine_type(&magic.names[0], &engines)?]
            }
        };
        let assign: Vec<bool> = match magic.kind {
            TransferKind::Push | TransferKind::Scatter => magic
                .names
                .iter()
                .zip(&types)
                .map(|(name, ty)| self.engine_type(name, &engines).ok().as_ref() == Some(ty))
                .collect(),
            TransferKind::Pull | TransferKind::Gather => Vec::new(),
        };
        let out = magic.out.clone().unwrap_or_else(|| magic.names[0].clone());
        let plan_with = |assign: &[bool]| {
            transfer::plan(&Request {
                kind: magic.kind,
                names: &magic.names,
                out: &out,
                engines: &engines,
                single,
                types: &types,
                assign,
                dep: &dep,
                dir: &dir,
            })
            .map_err(|error| usage(error.0))
        };
        let plan = plan_with(&assign)?;
        tracing::debug!(
            "{} planned after {:?}",
            magic.kind.magic(),
            started.elapsed()
        );
        let mut result = self
            .run_plan(&plan, magic, &types, &engines, evaluator)
            .await;
        let cannot_assign = |r: &Result<(), ErrorReport>| {
            r.as_ref().is_err_and(|e| {
                rustc_codes::any_of(&e.codes, rustc_codes::ASSIGNED_TWICE)
                    || rustc_codes::unresolved_name(&e.codes, &e.evalue)
                        .is_some_and(|name| magic.names.iter().any(|n| n == name))
            })
        };
        if assign.contains(&true) && cannot_assign(&result) {
            // The user bound the name without `mut` on the engines, or evcxr dropped it there
            // because its type was redefined since the hub saw it: bind it anew instead.
            let plan = plan_with(&[])?;
            result = self
                .run_plan(&plan, magic, &types, &engines, evaluator)
                .await;
        }
        clear_files(&dir, &magic.names);
        result?;
        self.say(
            request,
            &summary(magic, &out, &types, &engines, single, started),
        );
        Ok(())
    }

    /// Adds the client crate to the kernel's context and to the targets' states (a no-op once
    /// they have it). evcxr rebuilds a context when a crate is added, and drops the variables
    /// whose types a cell defined; if that happens, the user hears which and what to do.
    pub(super) async fn ensure_client(
        &mut self,
        evaluator: &Evaluator,
        dep: &str,
        engines: &[EngineId],
        magic: &str,
    ) -> Result<(), ErrorReport> {
        let incarnations = self.incarnations(engines)?;
        let missing: Vec<EngineId> = incarnations
            .iter()
            .filter(|pinned| !self.client_engines.contains(pinned))
            .map(|(id, _)| *id)
            .collect();
        if self.client_local && missing.is_empty() {
            return Ok(());
        }
        // evcxr only rebuilds when code runs after the `:dep`, so give it a statement.
        let adding = format!("{dep}\n();");
        let local_before = evaluator.variables().await;
        evaluator.run_hidden(&adding).await.map_err(|report| {
            transfer_error(
                format!(
                    "{magic}: the rustpx client crate did not build in the kernel's context: {}",
                    report.evalue
                ),
                report.traceback,
            )
        })?;
        let local_after = evaluator.variables().await;
        self.client_local = true;
        let engines_before = self.engine_variables(&missing)?;
        self.run_on_targets(&adding, &missing, CellFiles::default())
            .await
            .map_err(|failures| {
                let (id, error) = &failures[0];
                transfer_error(
                    format!(
                        "{magic}: the rustpx client crate did not build for engine {id}: {}",
                        error.evalue
                    ),
                    vec![],
                )
            })?;
        self.client_engines.extend(
            incarnations
                .into_iter()
                .filter(|(id, _)| missing.contains(id)),
        );
        let engines_after = self.engine_variables(&missing)?;
        let mut lost: Vec<String> = local_before
            .iter()
            .filter(|var| !local_after.contains(var))
            .map(|(name, _)| format!("{name} in the kernel's context"))
            .collect();
        for ((id, before), (_, after)) in engines_before.iter().zip(&engines_after) {
            lost.extend(
                before
                    .iter()
                    .filter(|name| !after.contains(name))
                    .map(|name| format!("{name} on engine {id}")),
            );
        }
        if lost.is_empty() {
            return Ok(());
        }
        Err(transfer_error(
            format!(
                "{magic}: adding the rustpx client crate rebuilt the Rust contexts, and evcxr dropped variables whose types a cell defined (it does this for any new :dep): {}. Define them again and repeat {magic}; the crate stays for the rest of the session.",
                lost.join(", ")
            ),
            vec![],
        ))
    }

    fn incarnations(&self, engines: &[EngineId]) -> Result<Vec<(EngineId, u64)>, ErrorReport> {
        let m = self.machinery()?;
        let live = lock(&m.hub).live_incarnations();
        Ok(engines
            .iter()
            .filter_map(|id| live.get(id).map(|incarnation| (*id, *incarnation)))
            .collect())
    }

    fn engine_variables(
        &self,
        engines: &[EngineId],
    ) -> Result<Vec<(EngineId, Vec<String>)>, ErrorReport> {
        let m = self.machinery()?;
        let hub = lock(&m.hub);
        Ok(engines.iter().map(|&id| (id, hub.variables(id))).collect())
    }

    async fn run_plan(
        &mut self,
        plan: &Plan,
        magic: &Transfer,
        types: &[String],
        engines: &[EngineId],
        evaluator: &Evaluator,
    ) -> Result<(), ErrorReport> {
        let explain = |report: ErrorReport, on_engines: bool| -> ErrorReport {
            let explained = magic.names.iter().zip(types).find_map(|(name, ty)| {
                transfer::explain_compile_error(
                    magic.kind,
                    name,
                    ty,
                    &report.codes,
                    &report.evalue,
                    on_engines,
                )
            });
            match explained {
                // The codes stay, so that a caller can still tell what failed.
                Some(text) => ErrorReport {
                    codes: report.codes,
                    ..transfer_error(text, report.traceback)
                },
                None => report,
            }
        };
        if let Some(code) = &plan.local_before {
            evaluator
                .run_generated(code)
                .await
                .map_err(|report| explain(report, false))?;
        }
        self.run_on_targets(&plan.engines, engines, plan.engine_files.clone())
            .await
            .map_err(|failures| {
                let first = failures[0].1.clone();
                let evalue = explain(
                    ErrorReport {
                        kind: first.kind,
                        evalue: first.evalue.clone(),
                        traceback: vec![],
                        codes: first.codes.clone(),
                    },
                    true,
                )
                .evalue;
                let ids: Vec<String> = failures.iter().map(|(id, _)| id.to_string()).collect();
                let traceback = failures
                    .iter()
                    .map(|(id, error)| format!("[Engine {id}] {}", error.summary()))
                    .collect();
                ErrorReport {
                    codes: first.codes,
                    ..transfer_error(
                        format!(
                            "{} failed on engine {}: {evalue}",
                            magic.kind.magic(),
                            ids.join(", ")
                        ),
                        traceback,
                    )
                }
            })?;
        if let Some(code) = &plan.local_after {
            evaluator
                .run_generated(code)
                .await
                .map_err(|report| explain(report, false))?;
        }
        Ok(())
    }

    /// Runs generated code on `engines` through the px compiler and waits; nothing is shown.
    async fn run_on_targets(
        &mut self,
        code: &str,
        engines: &[EngineId],
        files: CellFiles,
    ) -> Result<(), Vec<(EngineId, EngineError)>> {
        let kernel_error = |report: ErrorReport| {
            vec![(
                engines.first().copied().unwrap_or_default(),
                EngineError {
                    kind: report.kind,
                    evalue: report.evalue,
                    traceback: vec![],
                    shared_by: Vec::new(),
                    codes: report.codes,
                },
            )]
        };
        let (cell_id, mut events) = self
            .submit_quietly(code, engines, files)
            .map_err(kernel_error)?;
        let hub = self.machinery().map_err(kernel_error)?.hub.clone();
        loop {
            let done = lock(&hub).cell(&cell_id).is_none_or(CellRecord::is_done);
            if done {
                break;
            }
            match events.recv().await {
                Some(CellEvent::CellDone) | None => break,
                Some(_) => {}
            }
        }
        let failures = self.failures_of(&cell_id);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// Submits generated code to `engines` with an observer, without showing anything.
    pub(super) fn submit_quietly(
        &mut self,
        code: &str,
        engines: &[EngineId],
        files: CellFiles,
    ) -> Result<(String, mpsc::UnboundedReceiver<CellEvent>), ErrorReport> {
        let (hub, compiler) = {
            let m = self.machinery()?;
            (m.hub.clone(), m.compiler.clone())
        };
        let cell_id = uuid::Uuid::new_v4().simple().to_string();
        let (observer, events) = mpsc::unbounded_channel();
        {
            let mut hub = lock(&hub);
            hub.add_cell(CellRecord::new(
                cell_id.clone(),
                code.to_owned(),
                engines.to_vec(),
                false,
            ));
            hub.observe(&cell_id, observer);
        }
        if !compiler.submit(CompileJob {
            cell_id: cell_id.clone(),
            code: code.to_owned(),
            engines: engines.to_vec(),
            files,
        }) {
            lock(&hub).unobserve(&cell_id);
            return Err(transfer_error(
                "the px compiler has stopped; restart the kernel".into(),
                vec![],
            ));
        }
        Ok((cell_id, events))
    }

    /// Stops observing a finished quiet cell and returns the engines whose part failed.
    pub(super) fn failures_of(&self, cell_id: &str) -> Vec<(EngineId, EngineError)> {
        let Ok(m) = self.machinery() else {
            return Vec::new();
        };
        let mut hub = lock(&m.hub);
        hub.unobserve(cell_id);
        hub.cell(cell_id)
            .map(|cell| {
                cell.failures()
                    .into_iter()
                    .filter_map(|record| record.error.clone().map(|e| (record.engine, e)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The type of `name` on the targets; an error if it is missing or differs between them.
    fn engine_type(&self, name: &str, engines: &[EngineId]) -> Result<String, ErrorReport> {
        let m = self.machinery()?;
        let hub = lock(&m.hub);
        let mut types: Vec<(String, Vec<EngineId>)> = Vec::new();
        let mut missing = Vec::new();
        for &id in engines {
            match hub.variable_type(id, name) {
                Some(ty) => match types.iter_mut().find(|(known, _)| *known == ty) {
                    Some((_, ids)) => ids.push(id),
                    None => types.push((ty, vec![id])),
                },
                None => missing.push(id.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(ErrorReport::new(
                ErrorKind::Name,
                format!(
                    "name '{name}' is not defined on engine {}",
                    missing.join(", ")
                ),
            ));
        }
        match types.len() {
            1 => Ok(types.remove(0).0),
            _ => {
                let spelled: Vec<String> = types
                    .iter()
                    .map(|(ty, ids)| {
                        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                        format!("{ty} on engine {}", ids.join(", "))
                    })
                    .collect();
                Err(transfer_error(
                    format!(
                        "`{name}` has different types on the targets ({}); choose engines that agree with -t",
                        spelled.join("; ")
                    ),
                    vec![],
                ))
            }
        }
    }

    /// The directory values cross through, created on first use.
    pub(super) fn transfer_dir(&mut self) -> Result<PathBuf, ErrorReport> {
        if let Some(dir) = &self.transfer_dir {
            return Ok(dir.clone());
        }
        let dir = transfer_base().join(format!(
            "rustpx-transfer-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        create_private_dir(&dir).map_err(|error| {
            transfer_error(
                format!(
                    "cannot create the transfer directory {}: {error}",
                    dir.display()
                ),
                vec![],
            )
        })?;
        self.transfer_dir = Some(dir.clone());
        Ok(dir)
    }
}

/// Where transfer directories live: shared memory when the machine has it.
pub(super) fn transfer_base() -> PathBuf {
    if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

/// Mode 0700: the values of a session are nobody else's business.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

pub(super) async fn local_types(
    evaluator: &Evaluator,
    names: &[String],
) -> Result<Vec<String>, ErrorReport> {
    let variables = evaluator.variables().await;
    names
        .iter()
        .map(|name| {
            variables
                .iter()
                .find(|(var, _)| var == name)
                .map(|(_, ty)| ty.clone())
                .ok_or_else(|| ErrorReport::new(ErrorKind::Name, format!(
                        "name '{name}' is not defined in the kernel's context (define it in a plain cell first)"
                    )))
        })
        .collect()
}

/// Removes the files of this transfer: they hold copies of the user's values.
fn clear_files(dir: &std::path::Path, names: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if names
            .iter()
            .any(|name| file.starts_with(&format!("{name}.")))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn summary(
    magic: &Transfer,
    out: &str,
    types: &[String],
    engines: &[EngineId],
    single: bool,
    started: Instant,
) -> String {
    let ids: Vec<String> = engines.iter().map(ToString::to_string).collect();
    let on = format!("engine {}", ids.join(", "));
    let took = format!("{:.2} s", started.elapsed().as_secs_f64());
    match magic.kind {
        TransferKind::Push => format!("pushed {} to {on} ({took})", magic.names.join(", ")),
        TransferKind::Scatter => format!("scattered {} across {on} ({took})", magic.names[0]),
        TransferKind::Pull => format!(
            "pulled {} from {on} into {out}: {} ({took})",
            magic.names[0],
            if single {
                types[0].clone()
            } else {
                format!("Vec<{}>", types[0])
            }
        ),
        TransferKind::Gather => format!(
            "gathered {} from {on} into {out}: {} ({took})",
            magic.names[0], types[0]
        ),
    }
}
