//! `%pxresult`: a kept result shown again, collected, or its status.

use rustpx_wire::WireMessage;

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
}
