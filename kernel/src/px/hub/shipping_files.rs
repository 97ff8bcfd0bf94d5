//! What the hub's effects ask of the file system, for engines that do not share the kernel's
//! files: reading a run's objects and inputs before it starts, answering an engine's request
//! for objects, and writing the files a run sent back. All of it happens outside the hub's
//! lock, so a slow disk never stalls the link or another cell.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustpx_core::hub::Shipment;
use rustpx_protocol::{to_wire, EngineId, ObjectData, ObjectRef, RunReply};
use tokio::sync::mpsc::UnboundedSender;

use super::Outgoing;
use crate::px::cell_files::{self, CellFiles, InputCache};
use crate::px::shipping::ObjectCatalog;

/// The catalog of shipped objects and the cache of input files, shared by the threads that
/// start runs and the link that answers object requests.
#[derive(Default, Clone)]
pub(super) struct ShippingFiles {
    state: Arc<Mutex<Caches>>,
}

#[derive(Default)]
struct Caches {
    catalog: ObjectCatalog,
    inputs: InputCache,
}

/// Why a run could not be sent to an engine on another host; its run fails in the kernel.
#[derive(Debug, thiserror::Error)]
enum ShipmentError {
    #[error(transparent)]
    Objects(#[from] crate::px::shipping::ShippingError),
    #[error(transparent)]
    Inputs(#[from] cell_files::InputError),
    #[error("the values to send come to {0} bytes, more than the {max} bytes one message to an engine on another host may carry; push fewer at a time, or split the value with %scatter", max = rustpx_protocol::pieces::MAX_CARRIED_BYTES)]
    TooLarge(u64),
}

impl ShippingFiles {
    /// What a run of `so_path` on `engine` carries: the objects it needs and the data magic's
    /// input files with their bytes; or why they cannot be read, in one line.
    pub(super) fn shipment(
        &self,
        engine: EngineId,
        so_path: &str,
        files: &CellFiles,
    ) -> Result<Shipment, String> {
        let read = || -> Result<Shipment, ShipmentError> {
            let (inputs, files_out) = files.for_engine(engine);
            // Checked before anything is read: the engine would refuse the message.
            let size = rustpx_protocol::pieces::carried_bytes(&inputs);
            if size > rustpx_protocol::pieces::MAX_CARRIED_BYTES {
                return Err(ShipmentError::TooLarge(size));
            }
            let mut caches = crate::px::lock(&self.state);
            let objects = caches.catalog.objects_for(std::path::Path::new(so_path))?;
            let (files_in, buffers) = caches.inputs.read(&inputs)?;
            Ok(Shipment {
                objects,
                files_in,
                files_out,
                buffers,
            })
        };
        read().map_err(|error| error.to_string())
    }

    /// An earlier data magic's files are deleted when it ends: lets their bytes go too.
    pub(super) fn prune_inputs(&self) {
        crate::px::lock(&self.state).inputs.prune();
    }

    /// Answers an engine's request for objects its host lacks, one message per object with
    /// the bytes in its buffer (or why the kernel cannot read it).
    pub(super) fn send_objects(
        &self,
        session: &str,
        outbox: &UnboundedSender<Outgoing>,
        to: &Bytes,
        hashes: Vec<String>,
    ) {
        for sha256 in hashes {
            let path = crate::px::lock(&self.state)
                .catalog
                .path(&sha256)
                .map(std::path::Path::to_path_buf);
            let Some(path) = path else {
                tracing::warn!("hub: an engine asked for an unknown object {sha256}");
                continue;
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (bytes, missing) = match std::fs::read(&path) {
                Ok(bytes) => (Some(bytes), None),
                Err(error) => (None, Some(format!("{}: {error}", path.display()))),
            };
            let object = ObjectRef {
                name,
                size: bytes.as_ref().map_or(0, |b| b.len() as u64),
                sha256,
            };
            tracing::debug!("hub: sending {} ({} bytes)", object.name, object.size);
            let mut message = to_wire(session, &ObjectData { object, missing });
            if let Some(bytes) = bytes {
                message.buffers.push(Bytes::from(bytes));
            }
            let _ = outbox.send((to.clone(), message));
        }
    }
}

/// Writes the files a run on another host sent back (`buffers`, in the order of the reply's
/// `files`), where its request said (`files_out`), before the reply is handed to the hub: the
/// kernel's side of the magic reads them once the run is done.
pub(super) fn write_returned_files(
    engine: EngineId,
    files_out: &[String],
    reply: &RunReply,
    buffers: &[Bytes],
) {
    for (file, bytes) in reply.files.iter().zip(buffers) {
        if let Err(error) = cell_files::write_output(files_out, file, bytes) {
            tracing::warn!("hub: engine {engine}: {error}");
        }
    }
}
