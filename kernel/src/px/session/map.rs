//! Running `%pxmap`: a local `Vec` split into chunks, a function defined on the engines applied
//! to every item by whichever engine is free, the results back in input order.
//!
//! Three steps: the kernel's context writes the chunks (one small compiled cell), every target
//! runs `rustpx::serve_map(FUNCTION, …)` (compiled once per function and group, then cached), which
//! pulls chunks from [`MapServer`] until none are left (over the kernel's Unix socket on this
//! host, relayed by the engine link from other hosts), and the kernel's context reads the results
//! into the output variable with the result type the engines reported.

use std::time::{Duration, Instant};

use rustpx_wire::WireMessage;
use tokio::sync::mpsc;

use super::super::hub::CellEvent;
use super::super::magics::MapOptions;
use super::super::map_server::{short_type_name, MapJob, MapServer};
use super::super::records::EngineError;
use super::super::rustc_codes;
use super::super::transfer::vec_element;
use super::data::local_types;
use super::data_setup::{transfer_error, Prepared};
use super::{lock, usage, Progress, PxService};
use crate::evaluator::{ErrorReport, Evaluator};
use crate::px::cell_files::CellFiles;
use rustpx_core::ErrorKind;

/// Failures listed in an error before "and N more".
const FAILURES_SHOWN: usize = 5;

/// A map whose engines are at work: what finishing it needs.
pub(super) struct PendingMap {
    cell_id: String,
    events: mpsc::UnboundedReceiver<CellEvent>,
    server: MapServer,
    options: MapOptions,
    input_type: String,
    engines: Vec<u32>,
    dep: String,
    dir: std::path::PathBuf,
    started: Instant,
    total_items: u64,
    total_chunks: usize,
}

impl PxService {
    pub(super) async fn map(
        &mut self,
        request: &WireMessage,
        options: &MapOptions,
        count: u32,
        evaluator: &Evaluator,
    ) -> Result<(), ErrorReport> {
        if let Some(pending) = self.pending_map.take() {
            // One map at a time: the earlier `-a` map is collected first, as %pxresult would.
            self.map_is_last = false;
            self.finish_map(request, pending, evaluator).await?;
        }
        let started = Instant::now();
        let Prepared {
            engines, dir, dep, ..
        } = self
            .prepare_data_magic(request, options.targets.as_ref(), "%pxmap", evaluator)
            .await?;
        let input = &options.input;
        let input_type = local_types(evaluator, std::slice::from_ref(input)).await?;
        if vec_element(&input_type[0]).is_none() {
            return Err(usage(format!(
                "%pxmap maps over a Vec, and `{input}` is a `{}`; collect it first, e.g. `let {input}: Vec<_> = {input}.into_iter().collect();`",
                input_type[0]
            )));
        }
        let server_file = dir.join("map.server");
        let server = match &self.map_server {
            Some(server) => server.clone(),
            None => {
                let relay = self.machinery()?.hub.map_relay().clone();
                let server = MapServer::start(&server_file, &relay)
                    .await
                    .map_err(|error| {
                        transfer_error(format!("cannot start the map scheduler: {error}"), vec![])
                    })?;
                self.map_server = Some(server.clone());
                server
            }
        };

        // 1. The kernel's context writes the chunks.
        let chunk_file = dir.join(format!("{input}.map.in"));
        let chunk_size = match options.chunk_size {
            Some(n) => n.to_string(),
            None => format!(
                "rustpx::default_chunk_size({input}.len(), {})",
                engines.len()
            ),
        };
        evaluator
            .run_generated(&format!(
                "{dep}\nrustpx::save_chunks(&{input}, {chunk_size}, {:?}).unwrap_or_else(|e| panic!(\"%pxmap {input}: {{e}}\"));",
                chunk_file.to_string_lossy()
            ))
            .await?;
        let bytes = std::fs::read(&chunk_file).map_err(|error| {
            transfer_error(
                format!("cannot read the chunks of {input}: {error}"),
                vec![],
            )
        });
        let _ = std::fs::remove_file(&chunk_file);
        let job = MapJob::from_chunk_file(&bytes?)
            .map_err(|error| transfer_error(format!("%pxmap {input}: {error}"), vec![]))?;
        let (total_items, total_chunks) = (job.total_items(), job.total_chunks());
        *lock(&server.job) = Some(job);

        // 2. The engines serve the map until no chunk is left.
        let code = format!(
            "{dep}\nrustpx::serve_map({}, {:?}).unwrap_or_else(|e| panic!(\"%pxmap: {{e}}\"));",
            options.function,
            server_file.to_string_lossy()
        );
        // Engines on other hosts get the server file (address and token) with the run; their
        // connection goes to their own engine process, which relays it over the link.
        let files = CellFiles {
            inputs: vec![server_file.to_string_lossy().into_owned()],
            outputs: Vec::new(),
        };
        let (cell_id, events) = self.submit_quietly(&code, &engines, files)?;
        let pending = PendingMap {
            cell_id,
            events,
            server,
            options: options.clone(),
            input_type: input_type[0].clone(),
            engines,
            dep,
            dir,
            started,
            total_items,
            total_chunks,
        };
        if options.noblock {
            self.publisher
                .text_result(request, count, "<AsyncMapResult(%pxmap): pending>");
            self.pending_map = Some(pending);
            self.map_is_last = true;
            self.api_is_last = None;
            return Ok(());
        }
        self.finish_map(request, pending, evaluator).await
    }

    /// Waits for a map's engines (drawing progress), then reads the results into the kernel's
    /// context; with `-a` this runs at `%pxresult`.
    pub(super) async fn finish_map(
        &mut self,
        request: &WireMessage,
        mut pending: PendingMap,
        evaluator: &Evaluator,
    ) -> Result<(), ErrorReport> {
        let engine_failures = self.wait_map(request, &mut pending).await;
        let PendingMap {
            server,
            options,
            input_type,
            engines,
            dep,
            dir,
            started,
            total_items,
            total_chunks,
            ..
        } = pending;
        let options = &options;
        let input = &options.input;
        let Some(job) = lock(&server.job).take() else {
            return Err(transfer_error("the map was lost".into(), vec![]));
        };
        if job.interrupted && !job.is_done() {
            let out = options.out.as_deref().unwrap_or("the output");
            return Err(ErrorReport::new(ErrorKind::KeyboardInterrupt, format!(
                    "%pxmap {} {input} interrupted after {} of {total_items} items; {out} was not bound, and the engines kept their variables",
                    options.function,
                    job.done_items()
                )));
        }
        if !job.is_done() {
            let function = &options.function;
            let first = engine_failures.first().map(|(id, error)| {
                let text = error.summary();
                if rustc_codes::unresolved_name(&error.codes, &error.evalue) == Some(function.as_str()) {
                    format!("`{function}` is not defined on engine {id}; define it with a %%px cell first")
                } else if rustc_codes::any_of(&error.codes, rustc_codes::WRONG_TYPE) {
                    format!("`{function}` cannot take the items of `{input}` ({input_type}) on engine {id}: {text}")
                } else {
                    format!("engine {id}: {text}")
                }
            });
            return Err(transfer_error(
                format!(
                    "%pxmap {function} {input}: {} of {total_items} items done; {}",
                    job.done_items(),
                    first.unwrap_or_else(|| "no engine finished its part".into())
                ),
                engine_failures
                    .iter()
                    .map(|(id, error)| format!("[Engine {id}] {}", error.summary()))
                    .collect(),
            ));
        }

        // 3. The kernel's context reads the results in input order.
        let result_type = short_type_name(job.result_type.as_deref().unwrap_or("()"));
        let results_file = dir.join(format!("{input}.map.out"));
        let engines_file = dir.join(format!("{input}.map.engines"));
        std::fs::write(&results_file, job.results_file().unwrap_or_default()).map_err(|error| {
            transfer_error(format!("cannot write the map's results: {error}"), vec![])
        })?;
        let out = options
            .out
            .clone()
            .unwrap_or_else(|| format!("{input}_mapped"));
        let path = format!("{:?}", results_file.to_string_lossy());
        let fail = ".unwrap_or_else(|e| panic!(\"%pxmap results: {e}\"))";
        let (mut binding, local_type) = if options.errors_in_place {
            let ty = format!("Vec<Result<{result_type}, String>>");
            (
                format!("let {out}: {ty} = rustpx::load_results({path}){fail};"),
                ty,
            )
        } else if job.failures.is_empty() {
            let ty = format!("Vec<{result_type}>");
            (
                format!("let {out}: {ty} = rustpx::values(rustpx::load_results({path}){fail});"),
                ty,
            )
        } else {
            let _ = std::fs::remove_file(&results_file);
            return Err(item_failures(&job, &options.function, total_items));
        };
        let mut engines_note = String::new();
        if options.noblock {
            // The handle's per-item engine ids, as ipyparallel's AsyncMapResult has them.
            let ids: Vec<u32> = job
                .item_engines()
                .into_iter()
                .map(|e| e.unwrap_or(u32::MAX))
                .collect();
            let encoded: Vec<u8> = std::iter::once(ids.len() as u64)
                .flat_map(u64::to_le_bytes)
                .chain(ids.iter().flat_map(|id| id.to_le_bytes()))
                .collect();
            if std::fs::write(&engines_file, encoded).is_ok() {
                binding.push_str(&format!(
                    "\nlet {out}_engines: Vec<u32> = rustpx::load({:?}){fail};",
                    engines_file.to_string_lossy()
                ));
                engines_note = format!(" and {out}_engines: Vec<u32> (the engine of each item)");
            }
        }
        let loaded = evaluator.run_generated(&format!("{dep}\n{binding}")).await;
        let _ = std::fs::remove_file(&results_file);
        let _ = std::fs::remove_file(&engines_file);
        loaded.map_err(|report| {
            if rustc_codes::unresolved_name(&report.codes, &report.evalue)
                .is_some_and(|name| rustc_codes::names_in_type(&result_type, name))
            {
                transfer_error(
                    format!(
                        "%pxmap: the result type `{result_type}` of {} is not defined in the kernel's context; define it there too (a plain cell with the same definition)",
                        options.function
                    ),
                    report.traceback,
                )
            } else {
                report
            }
        })?;
        let ids: Vec<String> = engines.iter().map(ToString::to_string).collect();
        let died = if engine_failures.is_empty() {
            String::new()
        } else {
            let lost: Vec<String> = engine_failures
                .iter()
                .map(|(id, _)| id.to_string())
                .collect();
            format!(
                "; engine {} stopped and its chunks ran elsewhere",
                lost.join(", ")
            )
        };
        self.say(
            request,
            &format!(
                "mapped {} over {total_items} items of {input} on engine {} in {total_chunks} chunks ({:.2} s, engines busy {:.2} s{died}) into {out}: {local_type}{engines_note}",
                options.function,
                ids.join(", "),
                started.elapsed().as_secs_f64(),
                job.serial_seconds
            ),
        );
        Ok(())
    }

    /// `%pxresult --status` for a pending map: ready, progress, elapsed and serial time, and how
    /// many items each engine has run so far.
    pub(super) fn map_status(&self, pending: &PendingMap) -> String {
        let job = lock(&pending.server.job);
        let Some(job) = job.as_ref() else {
            return "%pxmap: no map is running".into();
        };
        let mut per_engine: std::collections::BTreeMap<u32, usize> = Default::default();
        for engine in job.item_engines().into_iter().flatten() {
            *per_engine.entry(engine).or_default() += 1;
        }
        let counts: Vec<String> = per_engine
            .iter()
            .map(|(id, n)| format!("engine {id}: {n}"))
            .collect();
        format!(
            "%pxmap {} over {}: ready: {}, progress: {}/{} items, elapsed: {:.2} s, serial_time: {:.2} s, items by engine: {}",
            pending.options.function,
            pending.options.input,
            job.is_done(),
            job.done_items(),
            job.total_items(),
            pending.started.elapsed().as_secs_f64(),
            job.serial_seconds,
            if counts.is_empty() { "none yet".into() } else { counts.join(", ") }
        )
    }

    /// Waits for the engines' serving cell, drawing progress by items done. Returns the engines
    /// whose part failed (a compile error, or death mid-map) with their message.
    async fn wait_map(
        &mut self,
        request: &WireMessage,
        pending: &mut PendingMap,
    ) -> Vec<(u32, EngineError)> {
        let hub = match self.machinery() {
            Ok(m) => m.hub.clone(),
            Err(report) => return vec![(0, report.into())],
        };
        let cell_id = pending.cell_id.clone();
        let mut progress =
            Progress::new(request, self.config.progress_after, "%pxmap").counting("items");
        let server = pending.server.clone();
        let items_done = || {
            lock(&server.job)
                .as_ref()
                .map(|job| job.done_items() as usize)
                .unwrap_or(0)
        };
        let total = pending.total_items as usize;
        *lock(&self.active_map) = Some((request.clone(), server.clone()));
        loop {
            if hub.cell_done_or_dropped(&cell_id) {
                break;
            }
            tokio::select! {
                event = pending.events.recv() => {
                    if matches!(event, Some(CellEvent::CellDone) | None) {
                        break;
                    }
                }
                // Progress redraws five times a second, not once per chunk: a map with
                // --chunksize 1 finishes tens of thousands of chunks a second.
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            progress.tick(self, items_done(), total, pending.started);
        }
        *lock(&self.active_map) = None;
        progress.finish(self, items_done(), total, pending.started);
        self.failures_of(&cell_id)
    }
}

/// "3 of 1000 items panicked: item 17 on engine 2: …"; the rest were computed.
fn item_failures(job: &MapJob, function: &str, total: u64) -> ErrorReport {
    let mut failures = job.failures.clone();
    failures.sort_by_key(|f| f.item);
    let mut lines: Vec<String> = failures
        .iter()
        .take(FAILURES_SHOWN)
        .map(|f| format!("item {} on engine {}: {}", f.item, f.engine, f.message))
        .collect();
    if failures.len() > FAILURES_SHOWN {
        lines.push(format!("and {} more", failures.len() - FAILURES_SHOWN));
    }
    ErrorReport {
        kind: ErrorKind::Map,
        evalue: format!(
            "{} of {total} items panicked in {function}: {}. The other items completed; rerun with --errors-in-place to keep every item's Result.",
            failures.len(),
            lines.join("; ")
        ),
        traceback: lines,
        codes: Vec::new(),
    }
}
