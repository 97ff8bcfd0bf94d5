//! The px compiler: one evcxr context compiling each `%px` cell once per group of engines.
//!
//! It runs on its own thread (evcxr is synchronous) and takes cells in submission order, so every
//! engine sees cells in the order they were run. Its evcxr child is the [bridge](super::bridge):
//! while a group's cell is being evaluated, the bridge sends the compiled object to exactly that
//! group's engines.

use std::collections::BTreeMap;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use evcxr::{EvalContext, EvalContextOutputs};
use rustpx_protocol::EngineId;

use super::bridge::{self, Dispatch};
use super::cell_commands::{self, next_opt_level, OptRequest};
use super::cell_files::CellFiles;
use super::groups::Groups;
use super::hub::{HubHandle, RunEnd};
use super::lock;
use super::records::EngineError;
use crate::evaluator::compile_error_report;

// evcxr's markers, as the bridge answers them.
use rustpx_core::ErrorKind;
use rustpx_runtime::markers::{CHANGED_TYPE, EXECUTION_COMPLETE, PANIC_NOTIFICATION, USER_ERROR};

/// A `%px` cell to compile and run on `engines`.
pub struct CompileJob {
    pub cell_id: String,
    pub code: String,
    pub engines: Vec<EngineId>,
    /// Files the engine side reads and writes (data magics), for engines on other hosts.
    pub files: CellFiles,
}

/// The engines a `LOAD_AND_RUN` goes to right now.
#[derive(Clone)]
struct Current {
    cell_id: String,
    /// Engines with the incarnation the group's state belongs to: a restarted engine with the
    /// same id must not receive this code.
    engines: Vec<(EngineId, u64)>,
    /// The compiled objects sent, in order (a cell can need more than one run).
    sent: Vec<(String, String)>,
    /// No engine panicked, returned an error through `?` or lost a variable to a type change.
    clean: bool,
    files: CellFiles,
    /// Time spent waiting for the engines' runs (the rest of an evaluation is the compile).
    running: std::time::Duration,
}

/// What the engines of one run reported, combined.
#[derive(Default)]
struct RunSummary {
    panicked: bool,
    user_error: bool,
    changed: Vec<String>,
}

impl RunSummary {
    fn clean(&self) -> bool {
        !self.panicked && !self.user_error && self.changed.is_empty()
    }
}

/// Runs one compiled object on `engines` (each pinned to its process) and waits for all of them.
fn run_on_engines(
    hub: &HubHandle,
    cell_id: &str,
    engines: &[(EngineId, u64)],
    so_path: &str,
    fn_name: &str,
    files: &CellFiles,
) -> RunSummary {
    let waits = hub.start_runs(cell_id, engines, so_path, fn_name, files);
    let mut summary = RunSummary::default();
    for wait in waits {
        match wait.recv() {
            Ok(RunEnd::Finished(reply)) => {
                match reply.status {
                    // A cell that did not run (or whose results could not come back) leaves
                    // the engine as a panic does: none of its new variables exist there, and
                    // the next cell must not be compiled as if they did (the engine would
                    // abort on a variable gone missing).
                    rustpx_protocol::RunStatus::Panic { .. }
                    | rustpx_protocol::RunStatus::LoadFailed { .. } => summary.panicked = true,
                    rustpx_protocol::RunStatus::UserError => summary.user_error = true,
                    _ => {}
                }
                for name in reply.changed_type {
                    if !summary.changed.contains(&name) {
                        summary.changed.push(name);
                    }
                }
            }
            // A dead engine leaves its group at the next cell; the others' results stand.
            Ok(RunEnd::Died(why)) => tracing::debug!("a run ended without a reply: {why}"),
            Err(_) => tracing::debug!("a run was dropped by the hub"),
        }
    }
    summary
}

/// What the compiler thread is asked to do.
enum Request {
    /// Bring the evcxr context up now (engines are starting: `%px` is about to be used).
    Start,
    Compile(CompileJob),
}

/// The front end's handle: submit cells; they run in order.
#[derive(Clone)]
pub struct Compiler {
    requests: std_mpsc::Sender<Request>,
}

impl Compiler {
    /// Starts the compiler thread. Its evcxr context (a second rust-analyzer: hundreds of MB)
    /// comes up when [`Compiler::warm_up`] is called, as engines start, or when the first cell
    /// arrives, whichever is first; a kernel that never uses `%px` never pays for it.
    pub fn start(hub: HubHandle) -> Compiler {
        let (requests, receiver) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("px-compiler".into())
            .spawn(move || run(receiver, hub))
            .ok();
        Compiler { requests }
    }

    /// Starts the evcxr context now, if no cell has started it yet (it then comes up while the
    /// engines start, instead of after them).
    pub fn warm_up(&self) {
        let _ = self.requests.send(Request::Start);
    }

    pub fn submit(&self, job: CompileJob) -> bool {
        self.requests.send(Request::Compile(job)).is_ok()
    }
}

/// Runs one compiled object on the current engines and combines their outcomes into the markers
/// evcxr expects: a panic anywhere drops the cell's new variables from the group's state.
fn dispatcher(hub: HubHandle, current: Arc<Mutex<Option<Current>>>) -> Dispatch {
    Arc::new(move |so_path: &str, fn_name: &str| {
        let target = lock(&current)
            .as_ref()
            .map(|c| (c.cell_id.clone(), c.engines.clone(), c.files.clone()));
        let Some((cell_id, engines, files)) = target else {
            // evcxr's own start-up and warm-up cells: nothing to run them on.
            return vec![EXECUTION_COMPLETE.to_owned()];
        };
        let started = std::time::Instant::now();
        let summary = run_on_engines(&hub, &cell_id, &engines, so_path, fn_name, &files);
        if let Some(current) = lock(&current).as_mut() {
            current.sent.push((so_path.to_owned(), fn_name.to_owned()));
            current.clean &= summary.clean();
            current.running += started.elapsed();
        }
        let mut lines = Vec::new();
        if summary.panicked {
            lines.push(PANIC_NOTIFICATION.to_owned());
        }
        if summary.user_error {
            lines.push(USER_ERROR.to_owned());
        }
        lines.extend(
            summary
                .changed
                .into_iter()
                .map(|n| format!("{CHANGED_TYPE}{n}")),
        );
        lines.push(EXECUTION_COMPLETE.to_owned());
        lines
    })
}

/// Why the px compiler's evcxr context could not start (every `%px` cell then fails with it).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot open the px bridge socket: {0}")]
    BridgeSocket(std::io::Error),
    /// The bridge is this binary re-executed, so it must be found again.
    #[error("{0}")]
    OwnPath(std::io::Error),
    #[error("{0}")]
    Evcxr(#[from] evcxr::Error),
}

/// The px context's warm-up cell (see [`start_context`]).
const PX_WARM_UP: &str = "let rustpx_warm_up: u64 = std::env::var(\"RUSTPX_WARM_UP\").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + vec![1u64].iter().map(|x| x + 1).sum::<u64>();";

fn start_context(
    hub: &HubHandle,
    current: &Arc<Mutex<Option<Current>>>,
) -> Result<(EvalContext, EvalContextOutputs), StartError> {
    crate::std_sources::ensure();
    let spec = bridge::serve(dispatcher(hub.clone(), current.clone()))
        .map_err(StartError::BridgeSocket)?;
    let exe = std::env::current_exe().map_err(StartError::OwnPath)?;
    let mut command = std::process::Command::new(exe);
    command.env(bridge::BRIDGE_ENV, spec);
    let (mut context, outputs) = EvalContext::with_subprocess_command(command)?;
    // Move rust-analyzer's first analysis off the user's first `let` (see evcxr-notes.md): the
    // warm-up's type goes through a parse, an `Option`, an iterator and a closure, so that
    // rust-analyzer has solved std's common traits before a cell needs them. Its text is fixed,
    // so its build is the same in every kernel and comes from the cell cache after the first.
    let mut snapshot = context.state();
    if let Some(flags) = crate::cell_objects::compact_rustflags() {
        snapshot.set_build_env("RUSTFLAGS", &flags);
    }
    snapshot.set_cache_bytes(crate::dep_cache::bytes_for_context());
    if let Err(error) = context.eval_with_state(PX_WARM_UP, snapshot.clone()) {
        tracing::debug!("px warm-up cell failed (harmless): {error}");
    }
    context.eval_with_state("", snapshot)?;
    Ok((context, outputs))
}

/// The bridge writes only markers to stdout and nothing to stderr; drain both anyway so evcxr
/// never waits on a full channel.
fn drain(outputs: EvalContextOutputs) {
    let EvalContextOutputs { stdout, stderr } = outputs;
    std::thread::spawn(move || {
        for line in stdout {
            tracing::debug!("px context stdout: {line}");
        }
    });
    std::thread::spawn(move || {
        for line in stderr {
            tracing::debug!("px context stderr: {line}");
        }
    });
}

fn run(requests: std_mpsc::Receiver<Request>, hub: HubHandle) {
    let first = match requests.recv() {
        Ok(Request::Start) => None,
        Ok(Request::Compile(job)) => Some(job),
        Err(_) => return,
    };
    let jobs = first
        .into_iter()
        .chain(requests.iter().filter_map(|r| match r {
            Request::Start => None,
            Request::Compile(job) => Some(job),
        }));
    let current: Arc<Mutex<Option<Current>>> = Arc::default();
    let started = std::time::Instant::now();
    let context = start_context(&hub, &current);
    let (mut context, outputs) = match context {
        Ok(ready) => {
            tracing::info!("px compiler ready in {:?}", started.elapsed());
            ready
        }
        Err(error) => {
            tracing::error!("the px compiler could not start: {error}");
            for job in jobs {
                fail_all(
                    &hub,
                    &job,
                    &format!("the px compiler could not start: {error}"),
                );
            }
            return;
        }
    };
    drain(outputs);
    // evcxr does not export the name of its state type, so the evcxr calls live in this closure,
    // where the type is inferred, and the bookkeeping stays generic.
    let mut groups = Groups::new((context.state(), Signature::default()));
    let mut cache = CompiledCache::default();
    let mut timing = false;
    for job in jobs {
        compile_and_run(
            &mut groups,
            &mut cache,
            &mut timing,
            &hub,
            &current,
            &job,
            |code, mut state, deps, opt| {
                if let Some(request) = opt {
                    let level = next_opt_level(request, state.opt_level());
                    state.set_opt_level(&level)?;
                }
                // The plain context's `:cache N` holds here too.
                state.set_cache_bytes(crate::dep_cache::bytes());
                for (name, config) in deps {
                    state.add_dep(name, config).map_err(|e| {
                        evcxr::Error::Message(format!(":dep {name} = {config}: {e}"))
                    })?;
                }
                context.eval_with_state(code, state)?;
                let mut variables: Vec<(String, String)> = context
                    .variables_and_types()
                    .map(|(name, ty)| (name.to_owned(), ty.to_owned()))
                    .collect();
                variables.sort();
                let mut items: Vec<String> =
                    context.defined_item_names().map(str::to_owned).collect();
                items.sort();
                let state = context.state();
                let opt_level = state.opt_level().to_owned();
                Ok((
                    state,
                    Signature {
                        variables,
                        items,
                        deps: Vec::new(),
                        opt_level,
                    },
                ))
            },
        );
        hub.finish_cell(&job.cell_id);
    }
}

fn fail_all(hub: &HubHandle, job: &CompileJob, message: &str) {
    let error = EngineError {
        kind: ErrorKind::Kernel,
        evalue: message.to_owned(),
        traceback: vec![],
        shared_by: Vec::new(),
        codes: Vec::new(),
    };
    hub.finish_engines(&job.cell_id, &job.engines, Some(error));
    hub.finish_cell(&job.cell_id);
}

/// What later cells compile against, as far as evcxr shows it: variables with their types, and
/// the names of defined items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub variables: Vec<(String, String)>,
    pub items: Vec<String>,
    /// `:dep` lines the group's state already has: repeating one changes nothing, so a cell
    /// that starts with it can still be cached.
    pub deps: Vec<(String, String)>,
    /// The cargo opt-level the group's cells are built at (`:opt`).
    pub opt_level: String,
}

/// The new state of a group and its signature, or why the cell failed.
type Evaluated<S> = Result<(S, Signature), evcxr::Error>;

/// Compiled cells that can run again without compiling: (group lineage, code) to the objects
/// that were sent. Only cells that cannot change the state (no `let`, no items, no `:dep`, state
/// unchanged, every engine clean) are kept, so a re-run needs no state bookkeeping either.
#[derive(Default)]
pub struct CompiledCache {
    entries: std::collections::HashMap<(u64, String), Vec<(String, String)>>,
}

/// How many compiled cells the cache keeps before it starts over.
const CACHE_LIMIT: usize = 512;

impl CompiledCache {
    fn get(&self, lineage: u64, code: &str) -> Option<&Vec<(String, String)>> {
        self.entries.get(&(lineage, code.to_owned()))
    }

    fn insert(&mut self, lineage: u64, code: &str, sent: Vec<(String, String)>) {
        if self.entries.len() >= CACHE_LIMIT {
            self.entries.clear();
        }
        self.entries.insert((lineage, code.to_owned()), sent);
    }
}

/// Whether a cell might bind a variable (`let`, or a `for`/`match` pattern does not matter: only
/// `let` bindings outlive the cell in evcxr).
fn may_bind_variables(code: &str) -> bool {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == "let")
}

fn compile_and_run<S: Clone>(
    groups: &mut Groups<(S, Signature)>,
    cache: &mut CompiledCache,
    timing: &mut bool,
    hub: &HubHandle,
    current: &Arc<Mutex<Option<Current>>>,
    job: &CompileJob,
    mut evaluate: impl FnMut(&str, S, &[(String, String)], Option<&OptRequest>) -> Evaluated<S>,
) {
    let live: BTreeMap<EngineId, u64> = hub.live_incarnations();
    groups.sync(&live);
    let targets: Vec<EngineId> = job
        .engines
        .iter()
        .copied()
        .filter(|id| live.contains_key(id))
        .collect();
    for &gone in job.engines.iter().filter(|id| !live.contains_key(id)) {
        let error = EngineError {
            kind: ErrorKind::Engine,
            evalue: format!("Engine {gone} is not running"),
            traceback: vec![format!(
                "EngineError: Engine {gone} is not running; restart it with `%engines restart {gone}`"
            )],
            shared_by: Vec::new(),
            codes: Vec::new(),
        };
        hub.finish_engines(&job.cell_id, &[gone], Some(error));
    }
    let cell = match cell_commands::split(&job.code) {
        Ok(cell) => cell,
        Err(message) => {
            let error = EngineError {
                kind: ErrorKind::Usage,
                evalue: message,
                traceback: vec![],
                shared_by: Vec::new(),
                codes: Vec::new(),
            };
            hub.finish_engines(&job.cell_id, &targets, Some(error));
            return;
        }
    };
    let (code, deps) = (&cell.code, &cell.deps);
    if cell.timing_toggles % 2 == 1 {
        *timing = !*timing;
        hub.add_note(&job.cell_id, format!("Timing: {timing}\n"));
    }
    let parts = groups.partition(&targets);
    tracing::debug!(
        "cell {}: {} engines in {} of {} groups",
        job.cell_id,
        targets.len(),
        parts.len(),
        groups.len()
    );
    for index in parts {
        let members: Vec<EngineId> = groups.group(index).members.keys().copied().collect();
        let pinned: Vec<(EngineId, u64)> = groups
            .group(index)
            .members
            .iter()
            .map(|(id, incarnation)| (*id, *incarnation))
            .collect();
        let lineage = groups.group(index).lineage;
        let new_deps: Vec<(String, String)> = deps
            .iter()
            .filter(|dep| !groups.group(index).state.1.deps.contains(dep))
            .cloned()
            .collect();
        let label = crate::px::render::engine_ranges(&members);
        if new_deps.is_empty() && cell.opt.is_none() {
            if let Some(sent) = cache.get(lineage, code) {
                for (so_path, fn_name) in sent {
                    run_on_engines(hub, &job.cell_id, &pinned, so_path, fn_name, &job.files);
                }
                if *timing {
                    hub.add_note(
                        &job.cell_id,
                        format!("[{label}:timing] compile: none (compiled before)\n"),
                    );
                }
                if cell.vars {
                    hub.add_note(
                        &job.cell_id,
                        vars_note(&label, &groups.group(index).state.1),
                    );
                }
                hub.finish_engines(&job.cell_id, &members, None);
                continue;
            }
        }
        let (state, before) = groups.group(index).state.clone();
        *lock(current) = Some(Current {
            cell_id: job.cell_id.clone(),
            engines: pinned,
            sent: Vec::new(),
            clean: true,
            files: job.files.clone(),
            running: std::time::Duration::ZERO,
        });
        let evaluation = std::time::Instant::now();
        let result = evaluate(code, state, &new_deps, cell.opt.as_ref());
        let ran = lock(current).take();
        if *timing && !code.trim().is_empty() {
            let running = ran.as_ref().map(|r| r.running).unwrap_or_default();
            let compile = evaluation.elapsed().saturating_sub(running);
            hub.add_note(
                &job.cell_id,
                format!("[{label}:timing] compile: {}\n", duration_text(compile)),
            );
        }
        let error = match result {
            Ok((state, mut after)) => {
                after.deps = before.deps.iter().chain(&new_deps).cloned().collect();
                let changed = after != before || crate::cell_text::may_define_items(code);
                if let Some(ran) = ran.filter(|r| r.clean && !r.sent.is_empty()) {
                    if !changed && !may_bind_variables(code) {
                        cache.insert(lineage, code, ran.sent);
                    }
                }
                if cell.opt.is_some() {
                    hub.add_note(
                        &job.cell_id,
                        format!("[{label}:opt] Optimization: {}\n", after.opt_level),
                    );
                }
                if cell.vars {
                    hub.add_note(&job.cell_id, vars_note(&label, &after));
                }
                let variables = after.variables.clone();
                groups.advance(index, (state, after), changed);
                hub.set_variables(&members, &variables);
                None
            }
            Err(evcxr::Error::CompilationErrors(errors)) => {
                let mut error: EngineError = compile_error_report(&errors, code).into();
                // One compile, one error: every engine of the group shares it.
                error.shared_by = members.clone();
                Some(error)
            }
            Err(other) => Some(EngineError {
                kind: ErrorKind::Other,
                evalue: other.to_string(),
                traceback: vec![],
                shared_by: Vec::new(),
                codes: Vec::new(),
            }),
        };
        hub.finish_engines(&job.cell_id, &members, error);
    }
    if *timing {
        run_time_notes(hub, &job.cell_id);
    }
}

/// `:vars` for one group: its variables and their types, one a line, as evcxr lists them.
fn vars_note(label: &str, signature: &Signature) -> String {
    if signature.variables.is_empty() {
        return format!("[{label}:vars] no variables\n");
    }
    let mut text = format!("[{label}:vars]\n");
    for (name, ty) in &signature.variables {
        text.push_str(&format!("{name}: {ty}\n"));
    }
    text
}

/// `:timing`'s run times: each engine's own, from when it started the cell to when it was done.
fn run_time_notes(hub: &HubHandle, cell_id: &str) {
    let Some(cell) = hub.cell(cell_id) else {
        return;
    };
    for record in cell.in_order() {
        if let (Some(started), Some(completed)) = (record.started, record.completed) {
            let run = (completed - started).to_std().unwrap_or_default();
            hub.add_note(
                cell_id,
                format!("[{}:timing] run: {}\n", record.engine, duration_text(run)),
            );
        }
    }
}

/// A duration the way a person reads it: `312 ms`, `1.52 s`, `0.41 ms`.
fn duration_text(duration: std::time::Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn let_bindings_are_recognised() {
        assert!(may_bind_variables("let x = 1;"));
        assert!(may_bind_variables("if true { let y = 2; }"));
        assert!(!may_bind_variables("outlet.len() + 1"));
        // Conservative: the word inside a string literal counts too (no caching, still correct).
        assert!(may_bind_variables("println!(\"let me\")"));
    }
}
