//! Turns the hub's run requests into runs this host can load, fetching missing objects first.
//!
//! Runs must execute in the order the hub sent them (a cell's later run may use variables an
//! earlier one defined), so a run whose objects are still on their way holds back every run
//! behind it. Each missing object is asked for once, however many runs need it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use bytes::Bytes;
use rustpx_protocol::{sha256_hex, ObjectData, RunRequest};

use crate::objects::ObjectCache;

/// A run the runner can start: its object and the libraries to load before it, on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRun {
    pub request: RunRequest,
    pub object: PathBuf,
    pub libraries: Vec<PathBuf>,
    /// Why the objects could not be had; the run is then reported as a load failure.
    pub error: Option<String>,
    /// The request's `files_in` with their bytes, to write just before the run.
    pub files_in: Vec<(String, Bytes)>,
}

/// The runs waiting for their objects, in arrival order.
pub struct Delivery {
    /// `None` when this engine reads the kernel's own paths.
    cache: Option<ObjectCache>,
    waiting: VecDeque<(RunRequest, Vec<Bytes>)>,
    requested: HashSet<String>,
    failed: HashMap<String, String>,
}

impl Delivery {
    pub fn new(cache: Option<ObjectCache>) -> Delivery {
        Delivery {
            cache,
            waiting: VecDeque::new(),
            requested: HashSet::new(),
            failed: HashMap::new(),
        }
    }

    /// Whether runs load from the kernel's own paths.
    pub fn shares_files(&self) -> bool {
        self.cache.is_none()
    }

    /// The object cache, when runs are fetched rather than read from the kernel's paths.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_ref().map(ObjectCache::dir)
    }

    /// A run arrived: the hashes to ask the hub for now, and the runs that can start.
    pub fn arrived(
        &mut self,
        run: RunRequest,
        buffers: Vec<Bytes>,
    ) -> (Vec<String>, Vec<PreparedRun>) {
        let mut ask = Vec::new();
        if let Some(cache) = &self.cache {
            for object in &run.objects {
                if !cache.has(object) && self.requested.insert(object.sha256.clone()) {
                    ask.push(object.sha256.clone());
                }
            }
        }
        self.waiting.push_back((run, buffers));
        (ask, self.release())
    }

    /// An object arrived (its bytes, or why the kernel could not send it): the runs that can
    /// start now.
    pub fn object_arrived(&mut self, data: &ObjectData, bytes: Option<&[u8]>) -> Vec<PreparedRun> {
        let hash = data.object.sha256.clone();
        self.requested.remove(&hash);
        let stored = match (&self.cache, data.missing.as_ref(), bytes) {
            (None, _, _) => Ok(()),
            (_, Some(why), _) => Err(format!(
                "the kernel could not send {}: {why}",
                data.object.name
            )),
            (Some(_), None, None) => {
                Err(format!("object {} arrived without bytes", data.object.name))
            }
            (Some(cache), None, Some(bytes)) => cache
                .store(&data.object, bytes)
                .map(|_| ())
                .map_err(|error| error.to_string()),
        };
        if let Err(why) = stored {
            tracing::error!("{why}");
            self.failed.insert(hash, why);
        }
        self.release()
    }

    fn release(&mut self) -> Vec<PreparedRun> {
        let mut ready = Vec::new();
        while let Some((run, buffers)) = self.waiting.front() {
            match self.prepare(run, buffers) {
                Some(prepared) => {
                    self.waiting.pop_front();
                    ready.push(prepared);
                }
                None => break,
            }
        }
        ready
    }

    /// The run ready to start, or `None` while an object is still on its way.
    fn prepare(&self, run: &RunRequest, buffers: &[Bytes]) -> Option<PreparedRun> {
        let files_in: Vec<(String, Bytes)> = run
            .files_in
            .iter()
            .zip(buffers.iter())
            .filter(|(file, bytes)| sha256_hex(bytes) == file.sha256)
            .map(|(file, bytes)| (file.path.clone(), bytes.clone()))
            .collect();
        let Some(cache) = &self.cache else {
            return Some(PreparedRun {
                request: run.clone(),
                object: PathBuf::from(&run.so_path),
                libraries: Vec::new(),
                error: None,
                files_in,
            });
        };
        let failure = |error: String| PreparedRun {
            request: run.clone(),
            object: PathBuf::from(&run.so_path),
            libraries: Vec::new(),
            error: Some(error),
            files_in: Vec::new(),
        };
        if files_in.len() != run.files_in.len() {
            return Some(failure(format!(
                "the run names {} files but carries {} intact ones",
                run.files_in.len(),
                files_in.len()
            )));
        }
        let Some((cell, libraries)) = run.objects.split_last() else {
            return Some(failure(
                "the kernel sent no objects, but this engine does not share the kernel's files"
                    .into(),
            ));
        };
        if let Some(why) = run.objects.iter().find_map(|o| self.failed.get(&o.sha256)) {
            return Some(failure(why.clone()));
        }
        if !run.objects.iter().all(|o| cache.has(o)) {
            return None;
        }
        Some(PreparedRun {
            request: run.clone(),
            object: cache.path_of(cell),
            libraries: libraries.iter().map(|o| cache.path_of(o)).collect(),
            error: None,
            files_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::object;
    use rustpx_protocol::ObjectRef;

    fn run(id: &str, objects: Vec<ObjectRef>) -> RunRequest {
        RunRequest {
            run_id: id.into(),
            cell_id: "c".into(),
            so_path: "/kernel/libcode_1.so".into(),
            fn_name: "run_user_code_1".into(),
            objects,
            files_in: vec![],
            files_out: vec![],
            may_have_value: true,
        }
    }

    fn data(object: &ObjectRef) -> ObjectData {
        ObjectData {
            object: object.clone(),
            missing: None,
        }
    }

    #[test]
    fn an_engine_sharing_files_runs_the_kernels_path_at_once() {
        let mut delivery = Delivery::new(None);
        let (ask, ready) =
            delivery.arrived(run("r1", vec![object(b"cell", "libcode_1.so")]), vec![]);
        assert!(ask.is_empty());
        assert_eq!(ready[0].object, PathBuf::from("/kernel/libcode_1.so"));
    }

    #[test]
    fn runs_wait_in_order_for_their_objects_which_are_asked_for_once() {
        let dir = std::env::temp_dir().join(format!("rustpx-delivery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut delivery = Delivery::new(Some(ObjectCache::new(dir.clone())));
        let std_lib = object(b"std", "libstd-x.so");
        let first = object(b"cell one", "libcode_1.so");
        let (ask, ready) =
            delivery.arrived(run("r1", vec![std_lib.clone(), first.clone()]), vec![]);
        assert_eq!(ask, vec![std_lib.sha256.clone(), first.sha256.clone()]);
        assert!(ready.is_empty());
        // A second run needing the same library asks for nothing new and waits behind the first.
        let (ask, ready) = delivery.arrived(run("r2", vec![std_lib.clone()]), vec![]);
        assert!(ask.is_empty() && ready.is_empty());
        assert!(delivery
            .object_arrived(&data(&std_lib), Some(b"std"))
            .is_empty());
        let ready = delivery.object_arrived(&data(&first), Some(b"cell one"));
        let ids: Vec<_> = ready.iter().map(|r| r.request.run_id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!(
            ready[0].libraries,
            vec![dir.join(&std_lib.sha256).join("libstd-x.so")]
        );
        assert!(ready[0].object.ends_with("libcode_1.so"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_object_the_kernel_cannot_send_fails_its_run_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("rustpx-delivery-x-{}", std::process::id()));
        let mut delivery = Delivery::new(Some(ObjectCache::new(dir.clone())));
        let cell = object(b"cell", "libcode_2.so");
        delivery.arrived(run("r1", vec![cell.clone()]), vec![]);
        let missing = ObjectData {
            object: cell,
            missing: Some("No such file".into()),
        };
        let ready = delivery.object_arrived(&missing, None);
        assert!(ready[0].error.as_ref().unwrap().contains("No such file"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
