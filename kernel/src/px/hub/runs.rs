//! Runs on the hub: a compiled cell sent to its engines (with the objects and files another
//! host needs), and what comes back (streams, displays, the reply) filed in the cell's records.

use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use chrono::Utc;
use rustpx_protocol::{
    to_wire, DisplayOutput, EngineId, ObjectData, ObjectRef, ObjectRequest, RunReply, RunRequest,
    RunStatus, StreamOutput,
};

use super::{parse_time, CellEvent, EngineState, Hub, PendingRun, RunEnd, Shipment, ShipmentError};
use crate::px::cell_files::{self, CellFiles};
use crate::px::records::{EngineError, TaskState};
use rustpx_core::ErrorKind;

impl Hub {
    /// Sends a run to the process `incarnation` of engine `engine` (code is compiled for the
    /// state of one process: a restarted engine with the same id must not get it). The receiver
    /// answers when the run finished or the engine died.
    pub fn start_run(
        &mut self,
        cell_id: &str,
        engine: EngineId,
        incarnation: u64,
        so_path: &str,
        fn_name: &str,
        files: &CellFiles,
    ) -> std_mpsc::Receiver<RunEnd> {
        let (done, receiver) = std_mpsc::channel();
        let Some(entry) = self
            .engines
            .get_mut(&engine)
            .filter(|e| e.alive() && e.incarnation == incarnation)
        else {
            let why = format!("engine {engine} restarted or stopped before this cell reached it");
            if let Some(record) = self
                .cells
                .get_mut(cell_id)
                .and_then(|c| c.engines.get_mut(&engine))
            {
                record.finish(Some(EngineError {
                    kind: ErrorKind::Engine,
                    evalue: format!(
                        "Engine {engine} was restarted before task '{}' ran",
                        record.task_id
                    ),
                    traceback: vec![format!("EngineError: {why}; the cell did not run there")],
                    shared_by: Vec::new(),
                    codes: Vec::new(),
                }));
            }
            self.notify(cell_id, CellEvent::EngineDone { engine });
            let _ = done.send(RunEnd::Died(why));
            return receiver;
        };
        entry.queue += 1;
        entry.state = EngineState::Busy;
        let identity = entry.identity.clone();
        let shipment = if entry.shares_files {
            Ok(Shipment::default())
        } else {
            self.shipment(engine, so_path, files)
        };
        let run_id = uuid::Uuid::new_v4().to_string();
        let may_have_value = self
            .cells
            .get(cell_id)
            .is_none_or(|cell| crate::cell_text::ends_in_expression(&cell.code));
        if let Some(record) = self
            .cells
            .get_mut(cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            record.state = TaskState::Running;
            record.started.get_or_insert_with(Utc::now);
        }
        self.runs.insert(
            run_id.clone(),
            PendingRun {
                cell_id: cell_id.to_owned(),
                engine,
                incarnation,
                done,
                files_out: shipment
                    .as_ref()
                    .map(|s| s.files_out.clone())
                    .unwrap_or_default(),
            },
        );
        match shipment {
            Ok(shipment) => {
                let request = RunRequest {
                    run_id,
                    cell_id: cell_id.to_owned(),
                    so_path: so_path.to_owned(),
                    fn_name: fn_name.to_owned(),
                    objects: shipment.objects,
                    files_in: shipment.files_in,
                    files_out: shipment.files_out,
                    may_have_value,
                };
                let mut message = to_wire(&self.session, &request);
                message.buffers = shipment.buffers;
                let _ = self.outbox.send((identity, message));
            }
            Err(error) => {
                // The engine cannot have the cell: fail its run here, as the engine would.
                tracing::error!("engine {engine} cannot be sent this cell: {error}");
                let now = Utc::now().to_rfc3339();
                self.run_reply(RunReply {
                    run_id,
                    execution_count: 0,
                    status: RunStatus::LoadFailed {
                        message: format!(
                            "the kernel cannot ship this cell to engine {engine}: {error}"
                        ),
                    },
                    value: None,
                    changed_type: Vec::new(),
                    started: now.clone(),
                    completed: now,
                    files: Vec::new(),
                });
            }
        }
        receiver
    }

    /// What a run on engine `engine`, which does not share the kernel's files, carries: the
    /// objects it needs and the data magic's input files with their bytes.
    pub(super) fn shipment(
        &mut self,
        engine: EngineId,
        so_path: &str,
        files: &CellFiles,
    ) -> Result<Shipment, ShipmentError> {
        let (inputs, files_out) = files.for_engine(engine);
        let objects = self.catalog.objects_for(std::path::Path::new(so_path))?;
        let (files_in, buffers) = self.inputs.read(&inputs)?;
        Ok(Shipment {
            objects,
            files_in,
            files_out,
            buffers,
        })
    }

    /// Writes the files a run on another host sent back, before its reply is processed (the
    /// kernel's side of the magic reads them once the run is done).
    pub(super) fn take_files(&self, reply: &RunReply, buffers: &[Bytes]) {
        if reply.files.is_empty() {
            return;
        }
        let Some(run) = self.runs.get(&reply.run_id) else {
            return;
        };
        for (file, bytes) in reply.files.iter().zip(buffers) {
            if let Err(error) = cell_files::write_output(&run.files_out, file, bytes) {
                tracing::warn!("hub: engine {}: {error}", run.engine);
            }
        }
    }

    /// Answers an engine's request for objects its host lacks, one message per object with the
    /// bytes in its buffer.
    pub(super) fn send_objects(&self, identity: &Bytes, request: ObjectRequest) {
        for sha256 in request.sha256 {
            let Some(path) = self.catalog.path(&sha256) else {
                tracing::warn!("hub: an engine asked for an unknown object {sha256}");
                continue;
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (bytes, missing) = match std::fs::read(path) {
                Ok(bytes) => (Some(bytes), None),
                Err(error) => (None, Some(format!("{}: {error}", path.display()))),
            };
            let object = ObjectRef {
                name,
                size: bytes.as_ref().map_or(0, |b| b.len() as u64),
                sha256,
            };
            tracing::debug!("hub: sending {} ({} bytes)", object.name, object.size);
            let mut message = to_wire(&self.session, &ObjectData { object, missing });
            if let Some(bytes) = bytes {
                message.buffers.push(Bytes::from(bytes));
            }
            let _ = self.outbox.send((identity.clone(), message));
        }
    }

    pub(super) fn notify(&self, cell_id: &str, event: CellEvent) {
        if let Some(observer) = self.observers.get(cell_id) {
            let _ = observer.send(event);
        }
    }

    pub(super) fn stream(&mut self, output: StreamOutput) {
        let Some(run) = self.runs.get(&output.run_id) else {
            tracing::debug!("hub: output for an unknown run dropped");
            return;
        };
        let (cell_id, engine) = (run.cell_id.clone(), run.engine);
        if let Some(record) = self
            .cells
            .get_mut(&cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            match output.name.as_str() {
                "stderr" => record.stderr.push_str(&output.text),
                _ => record.stdout.push_str(&output.text),
            }
        }
        self.notify(
            &cell_id,
            CellEvent::Stream {
                engine,
                name: output.name,
            },
        );
    }

    pub(super) fn display(&mut self, output: DisplayOutput) {
        let Some(run) = self.runs.get(&output.run_id) else {
            return;
        };
        let (cell_id, engine) = (run.cell_id.clone(), run.engine);
        let mut index = 0;
        if let Some(record) = self
            .cells
            .get_mut(&cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            record.displays.push(output.data);
            index = record.displays.len() - 1;
        }
        self.notify(&cell_id, CellEvent::Display { engine, index });
    }

    pub(super) fn run_reply(&mut self, reply: RunReply) {
        let Some(run) = self.runs.remove(&reply.run_id) else {
            tracing::debug!("hub: reply for an unknown run dropped");
            return;
        };
        if let Some(entry) = self.engines.get_mut(&run.engine) {
            entry.queue = entry.queue.saturating_sub(1);
            if entry.queue == 0 && entry.alive() {
                entry.state = EngineState::Idle;
            }
        }
        let failed = if let Some(record) = self
            .cells
            .get_mut(&run.cell_id)
            .and_then(|c| c.engines.get_mut(&run.engine))
        {
            record.execution_count = Some(reply.execution_count);
            if reply.value.is_some() {
                record.value = reply.value.clone();
            }
            record.started = parse_time(&reply.started).or(record.started);
            record.completed = parse_time(&reply.completed);
            let error = match &reply.status {
                RunStatus::Ok => None,
                RunStatus::Panic { message, location } => Some(EngineError {
                    kind: ErrorKind::Panic,
                    evalue: message.clone(),
                    traceback: vec![
                        format!("panicked at {location}: {message}"),
                        "Variables this cell defined were not kept on this engine.".into(),
                    ],
                    shared_by: Vec::new(),
                    codes: Vec::new(),
                }),
                RunStatus::UserError => {
                    let last = record
                        .stderr
                        .lines()
                        .last()
                        .unwrap_or("the cell returned an error through `?`")
                        .to_owned();
                    Some(EngineError {
                        kind: ErrorKind::Other,
                        evalue: last.clone(),
                        traceback: vec![format!("Error: {last}")],
                        shared_by: Vec::new(),
                        codes: Vec::new(),
                    })
                }
                RunStatus::LoadFailed { message } => Some(EngineError {
                    kind: ErrorKind::Load,
                    evalue: message.clone(),
                    traceback: vec![],
                    shared_by: Vec::new(),
                    codes: Vec::new(),
                }),
            };
            let failed = error.is_some();
            if failed {
                record.finish(error);
            }
            failed
        } else {
            false
        };
        if failed {
            self.notify(&run.cell_id, CellEvent::EngineDone { engine: run.engine });
        }
        let _ = run.done.send(RunEnd::Finished(reply));
    }
}
