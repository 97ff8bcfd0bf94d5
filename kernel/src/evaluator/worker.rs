//! The evaluator thread: it owns evcxr's context, starts it, and serves one job at a time (a
//! cell, a hidden cell, completion, inspection), publishing a cell's value or error itself.

use std::collections::BTreeSet;
use std::sync::mpsc;

use evcxr::{CommandContext, EvalContext, EvalOutputs};
use rustpx_wire::WireMessage;
use serde_json::{Map, Value};

use super::output_pump::{OutputPump, PanicReport};
use super::rerun::{self, RerunError, Rerunner};
use super::runtime;
use super::{compile_error_report, CompletionList, ErrorReport, Interrupter, Job, Outcome};
use crate::iopub::Publisher;
use rustpx_core::ErrorKind;

/// The evaluator thread: start evcxr, then serve jobs until the front end goes away.
pub(super) fn run(
    jobs: mpsc::Receiver<Job>,
    publisher: Publisher,
    interrupter: Interrupter,
    runtime_env: Vec<(String, String)>,
) {
    let started = std::time::Instant::now();
    let context = match start_context(&runtime_env) {
        Ok((context, outputs, rerunner)) => {
            tracing::info!("evcxr ready in {:?}", started.elapsed());
            let pump = OutputPump::start(outputs.stdout, outputs.stderr, publisher.clone());
            Ok((context, pump, rerunner))
        }
        Err(error) => {
            tracing::error!("evcxr could not start: {error}");
            Err(error)
        }
    };
    let mut context = context;
    let mut warmed = false;
    loop {
        // The analyser's first look at std (2-3 s) is taken when nothing waits, so that a new
        // kernel's first cell does not pay for it; a first `let` still finds it done. A first
        // cell already queued runs before it.
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {
                if !warmed {
                    warmed = true;
                    if let Ok((context, _, _)) = &mut context {
                        warm_up_analyser(context);
                    }
                    continue;
                }
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        let cancelled = matches!(job, Job::Execute { .. }) && interrupter.cell_begins();
        match (&mut context, job) {
            (_, Job::Execute { request, reply, .. }) if cancelled => {
                let report = interrupted_while_waiting();
                publish_error(&publisher, &request, &report);
                let _ = reply.send(Outcome::Error(report));
            }
            (
                Ok((context, pump, rerunner)),
                Job::Execute {
                    request,
                    code,
                    execution_count,
                    reply,
                },
            ) => {
                forget_compiled_if_changed(rerunner, &code);
                enable_fences(rerunner);
                crate::dep_cache::note_plain_cell(&code);
                let outcome = execute(
                    context,
                    pump,
                    &interrupter,
                    &publisher,
                    &request,
                    &code,
                    execution_count,
                );
                let _ = reply.send(outcome);
            }
            (Err(error), Job::Execute { request, reply, .. }) => {
                let report = ErrorReport::new(ErrorKind::EvcxrStart, format!(
                        "the Rust evaluation context could not start: {error}. Check that cargo and rustc are on the kernel's PATH, then restart the kernel."
                    ));
                publish_error(&publisher, &request, &report);
                let _ = reply.send(Outcome::Error(report));
            }
            (
                Ok((context, _, _)),
                Job::Complete {
                    code,
                    cursor_pos,
                    reply,
                },
            ) => {
                let _ = reply.send(complete(context, &code, cursor_pos));
            }
            (
                Ok((context, _, _)),
                Job::Inspect {
                    code,
                    cursor_pos,
                    reply,
                },
            ) => {
                let _ = reply.send(inspect(context, &code, cursor_pos));
            }
            (
                Ok((context, pump, rerunner)),
                Job::Hidden {
                    code,
                    reusable,
                    reply,
                },
            ) => {
                enable_fences(rerunner);
                let outcome = match rerunner {
                    Some(rerunner) if reusable => {
                        run_reusable(context, pump, &interrupter, rerunner, &code)
                    }
                    _ => {
                        forget_compiled_if_changed(rerunner, &code);
                        evaluate(context, pump, &interrupter, None, &code).map(drop)
                    }
                };
                let _ = reply.send(outcome);
            }
            (Err(error), Job::Hidden { reply, .. }) => {
                let _ = reply.send(Err(ErrorReport::new(
                    ErrorKind::EvcxrStart,
                    format!("the Rust evaluation context could not start: {error}"),
                )));
            }
            (Ok((context, _, _)), Job::Variables { reply }) => {
                let _ = reply.send(variables_and_types(context));
            }
            (Err(_), Job::Variables { reply }) => {
                let _ = reply.send(Vec::new());
            }
            (Err(_), Job::Complete { reply, .. }) => {
                let _ = reply.send(CompletionList::default());
            }
            (Err(_), Job::Inspect { reply, .. }) => {
                let _ = reply.send(None);
            }
        }
    }
}

/// The context, its outputs, and the side door to its child for re-running generated cells.
type Started = (CommandContext, evcxr::EvalContextOutputs, Option<Rerunner>);

/// Creates the context (rust-analyzer's first analysis of std comes later, when the evaluator
/// is idle: [`warm_up_analyser`]). The child is this binary as [`runtime`], unless its listener
/// cannot be opened (then evcxr's own).
pub(super) fn start_context(runtime_env: &[(String, String)]) -> Result<Started, evcxr::Error> {
    crate::std_sources::ensure();
    // The link-layout probe runs rustc once (0.2-0.4 s); it needs nothing from evcxr, so it
    // runs beside evcxr's start-up, which keeps one core busy in rust-analyzer.
    let layout_probe = std::thread::Builder::new()
        .name("layout-probe".into())
        .spawn(crate::cell_objects::compact_rustflags);
    let (rerunner, (mut eval_context, outputs)) = match Rerunner::bind() {
        Ok((rerunner, spec)) => {
            let mut command = std::process::Command::new(std::env::current_exe()?);
            command.env(runtime::RUNTIME_ENV, spec);
            command.envs(runtime_env.iter().map(|(k, v)| (k, v)));
            (
                Some(rerunner),
                EvalContext::with_subprocess_command(command)?,
            )
        }
        Err(error) => {
            tracing::warn!("generated cells will always compile: no re-run listener ({error})");
            (None, EvalContext::new()?)
        }
    };
    let mut snapshot = eval_context.state();
    let flags = match layout_probe {
        Ok(probe) => probe.join().ok().flatten(),
        Err(_) => crate::cell_objects::compact_rustflags(),
    };
    if let Some(flags) = flags {
        snapshot.set_build_env("RUSTFLAGS", &flags);
    }
    snapshot.set_cache_bytes(crate::dep_cache::bytes_for_context());
    eval_context.eval_with_state("", snapshot)?;
    // evcxr's own start-up cell printed nothing, but drain anything it may have queued.
    while outputs.stdout.try_recv().is_ok() {}
    while outputs.stderr.try_recv().is_ok() {}
    Ok((
        CommandContext::with_eval_context(eval_context),
        outputs,
        rerunner,
    ))
}

/// Makes rust-analyzer load and analyse std now, through a completion (which changes no state),
/// instead of in the user's first `let`, which would wait about 3 s for it.
pub(super) fn warm_up_analyser(context: &mut CommandContext) {
    let started = std::time::Instant::now();
    let code = "let rustpx_warm_up = vec![1u8].iter().map(|x| x + 1).collect::<Vec<u8>>(); rustpx_warm_up.";
    match context.completions(code, code.len()) {
        Ok(_) => tracing::debug!("analyser warmed up in {:?}", started.elapsed()),
        Err(error) => tracing::debug!("analyser warm-up failed (harmless): {error}"),
    }
}

/// Turns on the runtime's stdout fences if the runtime is new (see [`fence`]).
pub(super) fn enable_fences(rerunner: &mut Option<Rerunner>) {
    if let Some(rerunner) = rerunner {
        rerunner.enable_fences();
    }
}

/// Empties the re-run cache before a cell that may change what cells compile against.
pub(super) fn forget_compiled_if_changed(rerunner: &mut Option<Rerunner>, code: &str) {
    if let Some(rerunner) = rerunner {
        if crate::cell_text::may_change_compilation(code) {
            tracing::debug!("a cell may change items or settings: compiled cells forgotten");
            rerunner.forget_all();
        }
    }
}

pub(super) fn variables_and_types(context: &CommandContext) -> Vec<(String, String)> {
    let mut variables: Vec<(String, String)> = context
        .variables_and_types()
        .map(|(name, ty)| (name.to_owned(), ty.to_owned()))
        .collect();
    variables.sort();
    variables
}

/// Runs a generated cell from its compiled object when the variables are as they were when it
/// compiled, else through evcxr; a compiled cell that left the variables as they were is kept
/// for next time (one that defined a variable is not: evcxr must learn of the variable).
pub(super) fn run_reusable(
    context: &mut CommandContext,
    pump: &OutputPump,
    interrupter: &Interrupter,
    rerunner: &mut Rerunner,
    code: &str,
) -> Result<(), ErrorReport> {
    let key: rerun::Key = (code.to_owned(), variables_and_types(context));
    if let Some((so, function)) = rerunner.lookup(&key) {
        pump.set_parent(None);
        let started = std::time::Instant::now();
        // An interrupt kills the child as during any cell; evcxr restarts it below.
        interrupter.running(Some(context.process_handle()));
        let outcome = rerunner.run(&so, &function);
        interrupter.running(None);
        tracing::debug!("generated cell ran again in {:?}", started.elapsed());
        match outcome {
            Ok(fence) => match pump.flush_until(fence) {
                None => return Ok(()),
                Some(panic) => return Err(panic_report(&panic, &[])),
            },
            Err(RerunError::Panicked(fence)) => {
                let panic = match fence {
                    Some(fence) => pump.flush_until(Some(fence)),
                    None => wait_for_panic(pump),
                }
                .unwrap_or_else(|| PanicReport {
                    location: String::new(),
                    message: "the generated cell panicked".into(),
                });
                return Err(panic_report(&panic, &[]));
            }
            Err(error) => {
                tracing::info!("compiling a generated cell again: {error}");
                rerunner.forget(&key);
            }
        }
    }
    let runs_before = rerunner.last_run().map(|(runs, _, _)| runs);
    evaluate(context, pump, interrupter, None, code)?;
    if let (Some(before), Some((after, so, function))) = (runs_before, rerunner.last_run()) {
        if after == before + 1 && variables_and_types(context) == key.1 {
            tracing::debug!("generated cell compiled to {so}, kept for re-runs");
            rerunner.remember(key, so, function);
        }
    }
    Ok(())
}

/// The panic a re-run cell reported on stderr, which evcxr relays on its own thread: the
/// headline and, if it arrives within a second, the message line after it.
pub(super) fn wait_for_panic(pump: &OutputPump) -> Option<PanicReport> {
    for _ in 0..100 {
        if pump
            .panic_so_far()
            .is_some_and(|panic| !panic.message.is_empty())
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    pump.flush()
}

pub(super) fn variable_names(context: &CommandContext) -> BTreeSet<String> {
    context
        .variables_and_types()
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// A cell interrupted before it began: nothing of it ran, and the context is untouched.
fn interrupted_while_waiting() -> ErrorReport {
    ErrorReport {
        kind: ErrorKind::KeyboardInterrupt,
        evalue: "Interrupted before the cell started: it did not run, and no variables were lost"
            .into(),
        traceback: vec![
            "KeyboardInterrupt: the cell was interrupted while it waited for the Rust context; it did not run, and no variables were lost".into(),
        ],
        codes: Vec::new(),
    }
}

pub(super) fn execute(
    context: &mut CommandContext,
    pump: &OutputPump,
    interrupter: &Interrupter,
    publisher: &Publisher,
    request: &WireMessage,
    code: &str,
    execution_count: u32,
) -> Outcome {
    match evaluate(context, pump, interrupter, Some(request), code) {
        Ok(outputs) => {
            publish_value(publisher, request, execution_count, outputs);
            Outcome::Ok
        }
        Err(report) => {
            publish_error(publisher, request, &report);
            Outcome::Error(report)
        }
    }
}

/// Runs `code`; its stdout and stderr stream under `parent` (dropped when `None`).
pub(super) fn evaluate(
    context: &mut CommandContext,
    pump: &OutputPump,
    interrupter: &Interrupter,
    parent: Option<&WireMessage>,
    code: &str,
) -> Result<EvalOutputs, ErrorReport> {
    let before = variable_names(context);
    pump.set_parent(parent.cloned());
    interrupter.running(Some(context.process_handle()));
    let result = context.execute(code);
    interrupter.running(None);
    let interrupted = interrupter.take_requested();
    let panic = pump.flush();
    pump.set_parent(None);
    let lost: Vec<String> = before
        .difference(&variable_names(context))
        .cloned()
        .collect();

    match result {
        Ok(outputs) => match panic {
            Some(panic) => Err(panic_report(&panic, &lost)),
            None => Ok(outputs),
        },
        Err(evcxr::Error::CompilationErrors(errors)) => Err(compile_error_report(&errors, code)),
        Err(evcxr::Error::SubprocessTerminated(message)) if interrupted => {
            tracing::info!("plain cell interrupted ({message})");
            Err(ErrorReport {
                kind: ErrorKind::KeyboardInterrupt,
                evalue: lost_sentence("Interrupted", &lost),
                traceback: vec![format!(
                    "KeyboardInterrupt: the cell was stopped. {}",
                    lost_sentence("The Rust process was restarted", &lost)
                )],
                codes: Vec::new(),
            })
        }
        Err(evcxr::Error::SubprocessTerminated(message)) => Err(ErrorReport::new(
            ErrorKind::SubprocessTerminated,
            format!(
                "{message}. {}",
                lost_sentence("The Rust process was restarted", &lost)
            ),
        )),
        Err(other) => Err(ErrorReport::new(ErrorKind::Other, other.to_string())),
    }
}

/// "Interrupted; variables lost: a, b" or "Interrupted; no variables were lost".
pub(super) fn lost_sentence(what: &str, lost: &[String]) -> String {
    if lost.is_empty() {
        format!("{what}; no variables were lost.")
    } else {
        format!("{what}; variables lost: {}.", lost.join(", "))
    }
}

pub(super) fn panic_report(panic: &PanicReport, lost: &[String]) -> ErrorReport {
    let message = if panic.message.is_empty() {
        "the cell panicked".to_owned()
    } else {
        panic.message.clone()
    };
    ErrorReport {
        kind: ErrorKind::Panic,
        evalue: message.clone(),
        traceback: vec![
            format!("panicked at {}: {message}", panic.location),
            lost_sentence("Variables defined by this cell were not kept", lost),
        ],
        codes: Vec::new(),
    }
}

pub(super) fn publish_value(
    publisher: &Publisher,
    request: &WireMessage,
    count: u32,
    outputs: EvalOutputs,
) {
    if outputs.content_by_mime_type.is_empty() {
        return;
    }
    let data: Map<String, Value> = outputs
        .content_by_mime_type
        .into_iter()
        .map(|(mime, text)| (mime, Value::String(text)))
        .collect();
    publisher.execute_result(request, count, data);
}

pub(super) fn publish_error(publisher: &Publisher, request: &WireMessage, report: &ErrorReport) {
    publisher.error(request, report);
}

/// Byte offset of the `chars`-th code point (Jupyter counts cursor positions in code points).
pub(super) fn byte_offset(code: &str, chars: usize) -> usize {
    code.char_indices()
        .nth(chars)
        .map(|(i, _)| i)
        .unwrap_or(code.len())
}

pub(super) fn char_offset(code: &str, bytes: usize) -> usize {
    code.get(..bytes.min(code.len()))
        .map(|prefix| prefix.chars().count())
        .unwrap_or(0)
}

pub(super) fn complete(
    context: &mut CommandContext,
    code: &str,
    cursor_pos: usize,
) -> CompletionList {
    let position = byte_offset(code, cursor_pos);
    match context.completions(code, position) {
        Ok(found) => CompletionList {
            matches: found.completions.into_iter().map(|c| c.code).collect(),
            cursor_start: char_offset(code, found.start_offset),
            cursor_end: char_offset(code, found.end_offset),
        },
        Err(error) => {
            tracing::debug!("no completions: {error}");
            CompletionList {
                matches: vec![],
                cursor_start: cursor_pos,
                cursor_end: cursor_pos,
            }
        }
    }
}

pub(super) fn inspect(
    context: &mut CommandContext,
    code: &str,
    cursor_pos: usize,
) -> Option<Map<String, Value>> {
    let position = byte_offset(code, cursor_pos);
    let (text, markdown) = context.hover_at(code, position).ok()?;
    if text == "No documentation found" || text.is_empty() {
        return None;
    }
    let mut data = Map::new();
    data.insert("text/plain".into(), Value::String(text));
    data.insert("text/markdown".into(), Value::String(markdown));
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_positions_convert_between_code_points_and_bytes() {
        let code = "é = vec";
        assert_eq!(byte_offset(code, 1), 2);
        assert_eq!(char_offset(code, 2), 1);
        assert_eq!(byte_offset(code, 99), code.len());
    }

    #[test]
    fn lost_variables_are_named() {
        assert_eq!(
            lost_sentence("Interrupted", &["a".into(), "b".into()]),
            "Interrupted; variables lost: a, b."
        );
        assert_eq!(
            lost_sentence("Interrupted", &[]),
            "Interrupted; no variables were lost."
        );
    }
}
