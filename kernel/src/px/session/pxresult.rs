//! `%pxresult`: a kept result shown again, collected, or its status.

use std::collections::BTreeSet;

use rustpx_core::ErrorKind;
use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;

use super::super::api::scheduler::MAX_SUBMISSIONS;
use super::super::lock;

use super::{usage, PxService};
use crate::evaluator::{ErrorReport, Evaluator};
use crate::px::magics::ResultOptions;
use crate::px::render;

impl PxService {
    pub(super) async fn pxresult(
        &mut self,
        request: &WireMessage,
        options: &ResultOptions,
        evaluator: &Evaluator,
    ) -> Result<(), ErrorReport> {
        if options.name.is_none() {
            if let Some(id) = self.api_is_last {
                return self.api_pxresult(request, id);
            }
        }
        if options.name.is_none() && self.map_is_last {
            if let Some(pending) = self.pending_map.take() {
                if options.status {
                    let text = self.map_status(&pending);
                    self.pending_map = Some(pending);
                    self.say(request, &text);
                    return Ok(());
                }
                self.map_is_last = false;
                return self.finish_map(request, pending, evaluator).await;
            }
        }
        let cell_id = match &options.name {
            Some(name) => self.named.get(name).cloned().ok_or_else(|| {
                usage(format!(
                    "no %px result is named {name}; name one with `%%px -o {name}`"
                ))
            })?,
            None => self.last.clone().ok_or_else(|| {
                usage("%pxresult recalls last %px result, which has not yet been used.")
            })?,
        };
        if !self.machinery()?.hub.has_cell(&cell_id) {
            let which = match &options.name {
                Some(name) => format!("named {name}"),
                None => "of the last %px".to_owned(),
            };
            return Err(usage(format!(
                "the result {which} was dropped: the hub keeps the last {} %px results, as ipyparallel's hub culls its records; keep a value you need with `%pull` or in a variable",
                crate::px::hub::KEPT_RESULTS
            )));
        }
        if options.status {
            let cell = self.machinery()?.hub.cell(&cell_id);
            if let Some(cell) = cell {
                self.display(request, render::status_view(&cell), None, false);
            }
            return Ok(());
        }
        let Some(cell) = self.wait_done(request, &cell_id).await else {
            return Ok(());
        };
        if let Some(name) = &options.out {
            self.named.insert(name.clone(), cell_id);
            return Ok(());
        }
        self.publish_outputs(
            request,
            render::non_streamed(&cell, options.group_outputs.unwrap_or_default()),
        );
        match render::final_error(&cell) {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// `%pxresult` after a plain cell's `apply` or `map`: the call's state and its engines'
    /// errors (its values are the cell's, typed: the kernel never decodes them).
    fn api_pxresult(&mut self, request: &WireMessage, id: u64) -> Result<(), ErrorReport> {
        let dropped = || {
            usage(format!(
                "the last Rust API result was dropped: the kernel keeps the last {MAX_SUBMISSIONS} calls and forgets one when its AsyncResult is dropped; keep the AsyncResult in a variable"
            ))
        };
        let scheduler = self.api_scheduler.clone().ok_or_else(dropped)?;
        let text = {
            let book = lock(&scheduler.book);
            let call = book.submissions.get(&id).ok_or_else(dropped)?;
            if let Some(why) = &call.failed {
                return Err(ErrorReport::new(ErrorKind::Other, why.clone()));
            }
            let job = &call.job;
            let (what, unit) = if job.total_items() == 1 {
                ("apply", "tasks")
            } else {
                ("map", "items")
            };
            let engines: BTreeSet<EngineId> = job.item_engines().into_iter().flatten().collect();
            let engines: Vec<String> = engines.iter().map(|e| e.to_string()).collect();
            let head = format!(
                "{what} `{}`: {}/{} {unit} done",
                call.function,
                job.done_items(),
                job.total_items()
            );
            if !call.ready() {
                format!(
                    "{head} so far ({:.1} s); not ready: get() it in a cell, or %pxresult again",
                    call.elapsed()
                )
            } else if !job.failures.is_empty() {
                let mut text = format!(
                    "{} of {} tasks failed",
                    job.failures.len(),
                    job.total_items()
                );
                for failure in job.failures.iter().take(5) {
                    text.push_str(&format!(
                        "\n[{}:apply] item {}: {}",
                        failure.engine, failure.item, failure.message
                    ));
                }
                return Err(ErrorReport::new(ErrorKind::Composite, text));
            } else {
                format!(
                    "{head} on engine{} {} in {:.3} s (serial {:.3} s)",
                    if engines.len() == 1 { "" } else { "s" },
                    engines.join(", "),
                    call.elapsed(),
                    job.serial_seconds
                )
            }
        };
        self.say(request, &text);
        Ok(())
    }
}
