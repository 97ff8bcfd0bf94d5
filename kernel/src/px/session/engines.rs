//! `%engines` and the pool behind `%px`: starting engines (locally or through a launcher),
//! waiting for them to register, stopping and restarting them, and the engine table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jupyter_protocol::Stdio;
use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;
use serde_json::{Map, Value};

use super::{default_engine_count, join, usage, PxService, START_TIMEOUT};
use crate::evaluator::ErrorReport;
use crate::launch::{self, LaunchOptions, Launcher, Reach};
use crate::px::hub::EngineState;
use crate::px::magics::EnginesCommand;
use rustpx_core::ErrorKind;

impl PxService {
    /// Live engine ids, starting the local pool first if none are running.
    pub(super) async fn ensure_engines(
        &self,
        request: &WireMessage,
    ) -> Result<Vec<EngineId>, ErrorReport> {
        let m = self.machinery()?;
        let live = m.hub.live_ids();
        if !live.is_empty() {
            return Ok(live);
        }
        let n = default_engine_count();
        let local = m.pool.local_launcher();
        self.start_engines(request, &local, &LaunchOptions::default(), n)
            .await?;
        Ok(m.hub.live_ids())
    }

    /// Starts `n` engines with `launcher` on the first block of free ids and waits for them,
    /// showing progress.
    pub(super) async fn start_engines(
        &self,
        request: &WireMessage,
        launcher: &Arc<dyn Launcher>,
        options: &LaunchOptions,
        n: u32,
    ) -> Result<Vec<EngineId>, ErrorReport> {
        let m = self.machinery()?;
        let start_error = |evalue: String| ErrorReport::headline(ErrorKind::EngineStart, evalue);
        let reachable = m.address.reachable_from_other_hosts();
        if launcher.reach() == Reach::OtherHosts && !reachable && !launcher.tunnels() {
            return Err(start_error(format!(
                "the {} launcher starts engines that may run on other hosts, but the hub listens on {} and engines would dial {}: start the kernel with RUSTPX_HUB_IP=0.0.0.0 (and RUSTPX_HUB_LOCATION=<this host's address as the engines see it>), or add --tunnel to carry the link through ssh",
                launcher.name(),
                m.address.bind,
                m.address.location
            )));
        }
        let ids = self.free_ids(n)?;
        let engine = m.pool.invocation(&**launcher, options);
        // Failures and refusals from earlier starts (or engines started by hand) are not this
        // start's.
        m.pool.take_start_failures();
        m.hub.take_refusals();
        let started = m
            .pool
            .start(launcher, &ids, &engine)
            .map_err(|e| start_error(e.to_string()))?;
        // Engines mean `%px` is coming: its compiler's context comes up while they start.
        m.compiler.warm_up();
        if launcher.batch().is_some() {
            if let Some(job) = started.first() {
                self.say(
                    request,
                    &format!("submitted {} for engines {}", job.place, join(&ids)),
                );
            }
        }
        if launcher.reach() == Reach::MaybeOtherHosts && !reachable {
            self.say(request, &format!(
                "note: the hub listens on {} only, so {} ranks on other nodes cannot reach it (start the kernel with RUSTPX_HUB_IP=0.0.0.0 for them)",
                m.address.bind,
                launcher.name()
            ));
        }
        let place = if launcher.reach() == Reach::ThisHost {
            String::new()
        } else {
            format!(" with the {} launcher", launcher.name())
        };
        self.wait_registered(request, &ids, &format!("starting {n} engines{place}"))
            .await?;
        Ok(ids)
    }

    /// The first `n` consecutive ids that no live engine and no starting process holds
    /// (mpiexec and srun number their engines from a base).
    pub(super) fn free_ids(&self, n: u32) -> Result<Vec<EngineId>, ErrorReport> {
        let m = self.machinery()?;
        let free = |id: EngineId| !m.hub.is_alive(id) && !m.pool.holds(id);
        let mut base = 0;
        loop {
            match (base..base + n).find(|id| !free(*id)) {
                None => return Ok((base..base + n).collect()),
                Some(taken) => base = taken + 1,
            }
        }
    }

    /// What `%engines start --print` shows: the exact commands the launcher would run.
    pub(super) fn print_commands(
        &self,
        request: &WireMessage,
        launcher: &Arc<dyn Launcher>,
        options: &LaunchOptions,
        n: u32,
    ) -> Result<(), ErrorReport> {
        let m = self.machinery()?;
        let ids = self.free_ids(n)?;
        let engine = m.pool.invocation(&**launcher, options);
        if let Some(batch) = launcher.batch() {
            let plan = m
                .pool
                .jobs()
                .plan(batch, &ids, &engine)
                .map_err(|e| usage(e.to_string()))?;
            let text = format!(
                "The {} launcher would submit engines {} as a batch job:\n  {}\n{} (mode 0600; the engines read the hub's address and key from {}, mode 0600):\n{}",
                launcher.name(),
                join(&ids),
                plan.submit_line(),
                plan.script_path.display(),
                plan.connection_file.display(),
                plan.script
            );
            self.say(request, text.trim_end());
            return Ok(());
        }
        let commands = launcher
            .commands(&ids, &engine)
            .map_err(|e| usage(e.to_string()))?;
        let file = m
            .connection_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(not written)".into());
        let mut text = format!(
            "The {} launcher would run, for engines {} (CONNECTION_FILE is {file}):\n",
            launcher.name(),
            join(&ids)
        );
        for command in &commands {
            text.push_str(&format!("  {}\n", command.shell_line()));
        }
        if let Err(why) = launcher.check_ready() {
            text.push_str(&format!("(It cannot run here now: {why}.)\n"));
        }
        self.say(request, text.trim_end());
        Ok(())
    }

    /// Waits until `ids` are registered (alive), with a progress display that updates in place.
    pub(super) async fn wait_registered(
        &self,
        request: &WireMessage,
        ids: &[EngineId],
        label: &str,
    ) -> Result<(), ErrorReport> {
        let m = self.machinery()?;
        let display_id = format!("{}-engines", request.header.msg_id);
        let started = Instant::now();
        let mut shown = None;
        loop {
            let ready = m.hub.count_alive(ids);
            let text = format!("{label}: {ready}/{} ready", ids.len());
            if shown.as_ref() != Some(&text) {
                let mut data = Map::new();
                data.insert("text/plain".into(), Value::String(text.clone()));
                self.display(request, data, Some(&display_id), shown.is_some());
                shown = Some(text);
            }
            if ready == ids.len() {
                return Ok(());
            }
            let mut failures = m.pool.take_start_failures();
            failures.extend(m.hub.take_refusals());
            if !failures.is_empty() || started.elapsed() > START_TIMEOUT {
                let why = if failures.is_empty() {
                    format!(
                        "engines did not register within {} s with the hub at {}",
                        START_TIMEOUT.as_secs(),
                        m.connection.url
                    )
                } else {
                    failures.join("; ")
                };
                return Err(ErrorReport {
                    kind: ErrorKind::EngineStart,
                    evalue: format!("{label} failed: {why}"),
                    traceback: vec![format!(
                        "EngineStartError: {label} failed: {why}. The kernel log {} says why (RUSTPX_LOG=debug for more).",
                        crate::paths::log_file().display()
                    )],
                    codes: Vec::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn engines(
        &mut self,
        request: &WireMessage,
        command: EnginesCommand,
    ) -> Result<(), ErrorReport> {
        match command {
            EnginesCommand::List => {
                self.display(request, self.engine_table()?, None, false);
                Ok(())
            }
            EnginesCommand::Start { n, launch, print } => {
                let launcher = launch::launcher_for(&launch).map_err(|e| usage(e.to_string()))?;
                let n = n
                    .or(launcher.default_count())
                    .unwrap_or_else(default_engine_count);
                if print {
                    return self.print_commands(request, &launcher, &launch, n);
                }
                let ids = self.start_engines(request, &launcher, &launch, n).await?;
                self.say(request, &format!("started engines {}", join(&ids)));
                Ok(())
            }
            EnginesCommand::Stop { ids } => {
                let m = self.machinery()?;
                let ids = ids.unwrap_or_else(|| m.hub.live_ids());
                self.check_known(&ids)?;
                for &id in &ids {
                    m.hub.shutdown_engine(id);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && ids.iter().any(|id| m.pool.pid(*id).is_some()) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for id in &ids {
                    if m.pool.pid(*id).is_some() {
                        m.pool.kill_engine(*id);
                    }
                    m.hub.engine_gone(*id, None, "stopped by %engines stop");
                }
                self.say(request, &format!("stopped engines {}", join(&ids)));
                // A job whose engines are all gone holds its nodes for nothing.
                let cancelled = m.pool.jobs().cancel_unused(|id| m.hub.is_alive(id));
                if !cancelled.is_empty() {
                    self.say(request, &format!("cancelled {}", cancelled.join(", ")));
                }
                Ok(())
            }
            EnginesCommand::Restart { ids } => {
                let m = self.machinery()?;
                self.check_known(&ids)?;
                let mut report = String::new();
                for &id in &ids {
                    let variables = m.hub.variables(id);
                    if m.pool.pid(id).is_none() && m.pool.jobs().holds(id) {
                        // An engine of a batch job: it is asked to exit over the link, and its
                        // replacement comes in a job of its own.
                        m.pool.kill_engine(id);
                    }
                    if let Some(pid) = m.pool.pid(id) {
                        m.pool.kill_engine(id);
                        // A process of ours ends within milliseconds; wait for it so the new
                        // one cannot race its exit. A remote engine is asked to exit and goes.
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while m.pool.is_local_process(id) == Some(pid) && Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    m.hub.engine_gone(id, None, "restarted by %engines restart");
                    m.pool
                        .restart(id)
                        .map_err(|e| ErrorReport::new(ErrorKind::EngineStart, e.to_string()))?;
                    let lost = if variables.is_empty() {
                        "no variables were lost".to_owned()
                    } else {
                        format!("variables lost: {}", variables.join(", "))
                    };
                    report.push_str(&format!("engine {id} restarted ({lost})\n"));
                }
                self.wait_registered(request, &ids, &format!("restarting {} engines", ids.len()))
                    .await?;
                self.publisher.stream(request, Stdio::Stdout, report);
                Ok(())
            }
        }
    }

    pub(super) fn check_known(&self, ids: &[EngineId]) -> Result<(), ErrorReport> {
        let m = self.machinery()?;
        match m.hub.first_unknown(ids) {
            Some(missing) => Err(ErrorReport::headline(
                ErrorKind::NoSuchEngine,
                format!("No such engine: {missing}"),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn engine_table(&self) -> Result<Map<String, Value>, ErrorReport> {
        let m = self.machinery()?;
        let mut text = String::new();
        let mut html = String::from(
            "<table><tr><th>id</th><th>host</th><th>pid</th><th>state</th><th>queue</th><th>cells</th></tr>",
        );
        let mut any = false;
        for engine in m.hub.engines() {
            any = true;
            let state = match &engine.state {
                EngineState::Idle => "idle".to_owned(),
                EngineState::Busy => "busy".to_owned(),
                EngineState::Dead(why) => format!("dead ({why})"),
            };
            // Whether the engine reads cells from the kernel's files or has them sent.
            let cells = if engine.shares_files { "local" } else { "sent" };
            text.push_str(&format!(
                "{:>3}  {:<16} {:>8}  {:<5}  {:<5}  {}\n",
                engine.id, engine.hostname, engine.pid, engine.queue, cells, state
            ));
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                engine.id, engine.hostname, engine.pid, state, engine.queue, cells
            ));
        }
        html.push_str("</table>");
        let file = m
            .connection_file
            .as_ref()
            .map(|p| format!("; more engines: rustpx-engine --connect {}", p.display()))
            .unwrap_or_default();
        let footer = format!(
            "hub: {}{file}\nhub bound to: {}\nlog: {}\n",
            m.connection.url,
            m.address.bind,
            crate::paths::log_file().display()
        );
        let text = if any {
            format!(
                "{:>3}  {:<16} {:>8}  {:<5}  {:<5}  {}\n{text}{footer}",
                "id", "host", "pid", "queue", "cells", "state"
            )
        } else {
            format!(
                "No engines are running. The first %px starts {} local engines (RUSTPX_ENGINES), or use %engines start -n N.\n{footer}",
                default_engine_count()
            )
        };
        let mut data = Map::new();
        data.insert("text/plain".into(), Value::String(text));
        if any {
            html.push_str(&format!("<p><code>{}</code></p>", footer.trim_end()));
            data.insert("text/html".into(), Value::String(html));
        }
        Ok(data)
    }
}
