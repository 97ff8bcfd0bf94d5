//! Running `%push`, `%pull`, `%scatter` and `%gather`: the generated cells of
//! [`super::super::transfer`] in the kernel's context and on the targets, in order, with each
//! failure reported on the side and engine where it happened.

use std::time::Instant;

use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;
use tokio::sync::mpsc;

use super::super::cell_files::CellFiles;
use super::super::compiler::CompileJob;
use super::super::hub::CellEvent;
use super::super::magics::{Transfer, TransferKind};
use super::super::records::{CellRecord, EngineError};
use super::super::rustc_codes;
use super::super::transfer::{self, Plan, Request};
use super::data_setup::{transfer_error, Prepared};
use super::{usage, PxService};
use crate::evaluator::{ErrorReport, Evaluator};
use rustpx_core::ErrorKind;

impl PxService {
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

    pub(super) fn engine_variables(
        &self,
        engines: &[EngineId],
    ) -> Result<Vec<(EngineId, Vec<String>)>, ErrorReport> {
        let m = self.machinery()?;
        Ok(engines
            .iter()
            .map(|&id| (id, m.hub.variables(id)))
            .collect())
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
    pub(super) async fn run_on_targets(
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
            if hub.cell_done_or_dropped(&cell_id) {
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
        &self,
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
        let record = CellRecord::new(cell_id.clone(), code.to_owned(), engines.to_vec(), false);
        hub.add_cell(record, Some(observer));
        if !compiler.submit(CompileJob {
            cell_id: cell_id.clone(),
            code: code.to_owned(),
            engines: engines.to_vec(),
            files,
        }) {
            hub.unobserve(&cell_id);
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
        m.hub.unobserve_and_take_failures(cell_id)
    }

    /// The type of `name` on the targets; an error if it is missing or differs between them.
    fn engine_type(&self, name: &str, engines: &[EngineId]) -> Result<String, ErrorReport> {
        let m = self.machinery()?;
        let mut types: Vec<(String, Vec<EngineId>)> = Vec::new();
        let mut missing = Vec::new();
        for &id in engines {
            match m.hub.variable_type(id, name) {
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
