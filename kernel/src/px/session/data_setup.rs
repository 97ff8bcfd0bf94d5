//! What every data magic and `%pxmap` needs before it runs: live targets, the client crate in
//! the kernel's context and in each engine state, and a private directory where values cross.

use std::path::PathBuf;

use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;

use super::{usage, PxService};
use crate::evaluator::{ErrorReport, Evaluator};
use crate::px::cell_files::CellFiles;
use crate::px::client_crate;
use crate::px::targets::{self, Targets};
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

/// Where transfer directories live: shared memory when the machine has it.
pub(super) fn transfer_base() -> PathBuf {
    if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

/// Mode 0700: the values of a session are nobody else's business.
pub(super) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
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
        self.ensure_client_local(evaluator, dep, magic).await?;
        self.ensure_client_engines(dep, engines, magic).await
    }

    /// The kernel's context's half of [`Self::ensure_client`].
    pub(super) async fn ensure_client_local(
        &mut self,
        evaluator: &Evaluator,
        dep: &str,
        magic: &str,
    ) -> Result<(), ErrorReport> {
        if self.client_local {
            return Ok(());
        }
        let local_before = evaluator.variables().await;
        evaluator
            .run_hidden(&adding_line(dep))
            .await
            .map_err(|report| {
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
        let lost: Vec<String> = local_before
            .iter()
            .filter(|var| !local_after.contains(var))
            .map(|(name, _)| format!("{name} in the kernel's context"))
            .collect();
        lost_error(magic, lost)
    }

    /// The engines' half of [`Self::ensure_client`]; needs no evaluator, so the Rust API can
    /// call it while a plain cell runs.
    pub(super) async fn ensure_client_engines(
        &mut self,
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
        if missing.is_empty() {
            return Ok(());
        }
        let engines_before = self.engine_variables(&missing)?;
        self.run_on_targets(&adding_line(dep), &missing, CellFiles::default())
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
        let mut lost = Vec::new();
        for ((id, before), (_, after)) in engines_before.iter().zip(&engines_after) {
            lost.extend(
                before
                    .iter()
                    .filter(|name| !after.contains(name))
                    .map(|name| format!("{name} on engine {id}")),
            );
        }
        lost_error(magic, lost)
    }

    pub(super) fn incarnations(
        &self,
        engines: &[EngineId],
    ) -> Result<Vec<(EngineId, u64)>, ErrorReport> {
        let m = self.machinery()?;
        let live = m.hub.live_incarnations();
        Ok(engines
            .iter()
            .filter_map(|id| live.get(id).map(|incarnation| (*id, *incarnation)))
            .collect())
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

/// evcxr only rebuilds when code runs after the `:dep`, so the line gets a statement.
fn adding_line(dep: &str) -> String {
    format!("{dep}\n();")
}

/// The variables evcxr dropped when the client crate was added, as an error.
fn lost_error(magic: &str, lost: Vec<String>) -> Result<(), ErrorReport> {
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
