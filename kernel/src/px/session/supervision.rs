//! `%pxconfig`, and what the notebook is told when `--restart-dead` replaced engines.

use jupyter_protocol::Stdio;
use rustpx_wire::WireMessage;

use super::{join, PxService};
use crate::evaluator::ErrorReport;
use crate::px::magics::PxConfigOptions;

impl PxService {
    /// Merges the exec options into the defaults of later cells and sets the restart policy.
    pub(super) fn pxconfig(
        &mut self,
        request: &WireMessage,
        options: &PxConfigOptions,
    ) -> Result<(), ErrorReport> {
        self.config.update(&options.exec);
        if let Some(limit) = options.restart_dead {
            self.machinery()?.pool.set_restart_limit(limit);
            let text = match limit {
                0 => "engines that die are not restarted".to_owned(),
                1 => "engines that die are restarted once each, with the same id".to_owned(),
                n => {
                    format!("engines that die are restarted up to {n} times each, with the same id")
                }
            };
            self.say(request, &text);
        }
        Ok(())
    }

    /// Says which engines `--restart-dead` replaced since the last magic, and waits until they
    /// registered, so that `all` in this magic includes them again. A restart that fails is
    /// said, and the magic runs on the engines there are.
    pub(super) async fn report_restarts(&self, request: &WireMessage) {
        let Ok(m) = self.machinery() else {
            return;
        };
        let notices = m.pool.take_restart_notices();
        if notices.is_empty() {
            return;
        }
        let mut text = String::new();
        let mut restarted = Vec::new();
        for notice in notices {
            text.push_str(&notice.text);
            text.push('\n');
            if notice.restarted && !restarted.contains(&notice.id) {
                restarted.push(notice.id);
            }
        }
        self.publisher.stream(request, Stdio::Stderr, text);
        if restarted.is_empty() {
            return;
        }
        let label = format!("restarting engines {}", join(&restarted));
        if let Err(error) = self.wait_registered(request, &restarted, &label).await {
            self.publisher
                .stream(request, Stdio::Stderr, format!("{}\n", error.evalue));
        }
    }
}
