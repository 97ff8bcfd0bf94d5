//! The state of one `%pxmap`: its chunks, which are queued, in flight or done, their results
//! in input order, and the items that panicked. Pure bookkeeping, with no I/O, so the rules
//! (each chunk handed out once, back in the queue when its engine drops) are tested alone; the
//! scheduler in [`super::map_server`] drives it.

use std::collections::VecDeque;
use std::time::Instant;

use rustpx_protocol::EngineId;

/// One item that panicked on an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFailure {
    pub item: u64,
    pub engine: EngineId,
    pub message: String,
}

/// The state of one map, shared by the connections serving it.
#[derive(Debug, Default)]
pub struct MapJob {
    chunks: Vec<Vec<u8>>,
    /// The index of each chunk's first item.
    first_items: Vec<u64>,
    queue: VecDeque<usize>,
    results: Vec<Option<Vec<u8>>>,
    /// Which engine ran each item, by chunk.
    engines_by_chunk: Vec<Option<EngineId>>,
    pub failures: Vec<ItemFailure>,
    pub result_type: Option<String>,
    pub argument_type: Option<String>,
    pub started: Option<Instant>,
    /// Time spent on the engines per chunk, summed (ipyparallel's serial_time).
    pub serial_seconds: f64,
    done_chunks: usize,
    /// Items of each chunk (for per-item engine ids).
    chunk_lengths: Vec<u64>,
    /// Stopped by an interrupt: nothing more goes out.
    pub interrupted: bool,
}

/// Why a chunk file written by `rustpx::save_chunks` cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChunkFileError {
    #[error("the chunk file is truncated")]
    Truncated,
    #[error("a chunk without its item count")]
    NoItemCount,
}

impl MapJob {
    /// A job over chunks as `rustpx::save_chunks` wrote them (length-prefixed bincode, whose
    /// first eight bytes are the chunk's item count).
    pub fn from_chunk_file(bytes: &[u8]) -> Result<MapJob, ChunkFileError> {
        let mut job = MapJob::default();
        let mut rest = bytes;
        let mut first_item = 0u64;
        while !rest.is_empty() {
            let (len, tail) = rest.split_at_checked(8).ok_or(ChunkFileError::Truncated)?;
            let len = len
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| ChunkFileError::Truncated)?;
            let chunk = usize::try_from(len)
                .ok()
                .and_then(|len| tail.get(..len))
                .ok_or(ChunkFileError::Truncated)?;
            let items = chunk
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(ChunkFileError::NoItemCount)?;
            job.chunks.push(chunk.to_vec());
            job.first_items.push(first_item);
            job.chunk_lengths.push(items);
            first_item += items;
            rest = &tail[chunk.len()..];
        }
        let n = job.chunks.len();
        job.queue = (0..n).collect();
        job.results = vec![None; n];
        job.engines_by_chunk = vec![None; n];
        Ok(job)
    }

    pub fn total_chunks(&self) -> usize {
        self.chunks.len()
    }

    pub fn total_items(&self) -> u64 {
        self.chunk_lengths.iter().sum()
    }

    pub fn done_items(&self) -> u64 {
        self.results
            .iter()
            .zip(&self.chunk_lengths)
            .filter(|(r, _)| r.is_some())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn is_done(&self) -> bool {
        self.done_chunks == self.chunks.len()
    }

    /// How many items chunk `index` holds (`None`: no such chunk).
    pub fn chunk_items(&self, index: usize) -> Option<u64> {
        self.chunk_lengths.get(index).copied()
    }

    /// The engine that ran each item, in input order (`None` for items not run yet).
    pub fn item_engines(&self) -> Vec<Option<EngineId>> {
        self.engines_by_chunk
            .iter()
            .zip(&self.chunk_lengths)
            .flat_map(|(engine, n)| std::iter::repeat_n(*engine, *n as usize))
            .collect()
    }

    /// The results file for `rustpx::load_results`, once every chunk is back.
    pub fn results_file(&self) -> Option<Vec<u8>> {
        let size = self.results.iter().flatten().map(|r| r.len() + 8).sum();
        let mut bytes = Vec::with_capacity(size);
        for result in &self.results {
            let result = result.as_ref()?;
            bytes.extend_from_slice(&(result.len() as u64).to_le_bytes());
            bytes.extend_from_slice(result);
        }
        Some(bytes)
    }

    /// No more chunks go out; what engines hold still comes back.
    pub fn stop(&mut self) {
        self.queue.clear();
        self.interrupted = true;
    }

    pub(super) fn next_chunk(&mut self) -> Option<(usize, u64, Vec<u8>)> {
        if self.interrupted {
            return None;
        }
        let index = self.queue.pop_front()?;
        Some((index, self.first_items[index], self.chunks[index].clone()))
    }

    /// The first queued chunk that `accept` takes (the Rust API's scheduler passes over a
    /// retried chunk for the engine it just failed on while another engine can take it).
    pub(super) fn next_chunk_matching(
        &mut self,
        mut accept: impl FnMut(usize) -> bool,
    ) -> Option<(usize, u64, Vec<u8>)> {
        if self.interrupted {
            return None;
        }
        let position = self.queue.iter().position(|index| accept(*index))?;
        let index = self.queue.remove(position)?;
        Some((index, self.first_items[index], self.chunks[index].clone()))
    }

    /// Takes every queued chunk out of the queue (an abort): they are never handed out.
    pub(super) fn take_queued(&mut self) -> Vec<usize> {
        self.queue.drain(..).collect()
    }

    /// Chunk `index`'s results as its engine wrote them, once it is back.
    pub fn chunk_result(&self, index: usize) -> Option<&[u8]> {
        self.results.get(index)?.as_deref()
    }

    /// The index of chunk `index`'s first item in the call.
    pub fn first_item(&self, index: usize) -> Option<u64> {
        self.first_items.get(index).copied()
    }

    /// The engine that ran chunk `index`.
    pub fn chunk_engine(&self, index: usize) -> Option<EngineId> {
        self.engines_by_chunk.get(index).copied().flatten()
    }

    /// Hands out chunk `index` if it waits in the queue (a task pinned to one engine).
    pub(super) fn take_chunk(&mut self, index: usize) -> Option<(usize, u64, Vec<u8>)> {
        if self.interrupted {
            return None;
        }
        let position = self.queue.iter().position(|queued| *queued == index)?;
        self.queue.remove(position);
        Some((index, self.first_items[index], self.chunks[index].clone()))
    }

    /// Whether chunk `index` waits in the queue.
    pub(super) fn is_queued(&self, index: usize) -> bool {
        self.queue.contains(&index)
    }

    /// Whether chunk `index` has its results.
    pub fn is_chunk_done(&self, index: usize) -> bool {
        self.results.get(index).is_some_and(Option::is_some)
    }

    pub(super) fn complete(
        &mut self,
        index: usize,
        engine: EngineId,
        failures: Vec<(u64, String)>,
        bytes: Vec<u8>,
        seconds: f64,
    ) {
        if self.results.get(index).is_none_or(Option::is_some) {
            return;
        }
        self.results[index] = Some(bytes);
        self.engines_by_chunk[index] = Some(engine);
        self.failures
            .extend(failures.into_iter().map(|(item, message)| ItemFailure {
                item,
                engine,
                message,
            }));
        self.serial_seconds += seconds;
        self.done_chunks += 1;
    }

    pub(super) fn requeue(&mut self, chunks: impl IntoIterator<Item = usize>) {
        for index in chunks {
            if self.results.get(index).is_some_and(Option::is_none) {
                self.queue.push_front(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_file(chunks: &[&[u64]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for chunk in chunks {
            let mut encoded = (chunk.len() as u64).to_le_bytes().to_vec();
            for item in *chunk {
                encoded.extend_from_slice(&item.to_le_bytes());
            }
            bytes.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&encoded);
        }
        bytes
    }

    #[test]
    fn chunks_are_handed_out_once_and_requeued_when_an_engine_drops() {
        let mut job = MapJob::from_chunk_file(&chunk_file(&[&[1, 2], &[3, 4], &[5]])).unwrap();
        assert_eq!((job.total_chunks(), job.total_items()), (3, 5));
        let (first, first_item, _) = job.next_chunk().unwrap();
        let (second, second_item, _) = job.next_chunk().unwrap();
        assert_eq!((first, first_item, second, second_item), (0, 0, 1, 2));
        job.requeue([second]);
        assert!(!job.interrupted);
        job.complete(first, 3, vec![(1, "boom".into())], vec![9], 0.5);
        assert_eq!(job.next_chunk().map(|c| c.0), Some(1));
        job.complete(1, 2, vec![], vec![8], 0.25);
        job.complete(1, 2, vec![], vec![7], 0.25);
        assert!(!job.is_done());
        assert_eq!(job.next_chunk().map(|c| c.0), Some(2));
        job.complete(2, 2, vec![], vec![6], 0.25);
        assert!(job.is_done());
        assert_eq!(job.done_items(), 5);
        assert_eq!(
            job.item_engines(),
            vec![Some(3), Some(3), Some(2), Some(2), Some(2)]
        );
        assert_eq!(
            job.failures,
            vec![ItemFailure {
                item: 1,
                engine: 3,
                message: "boom".into()
            }]
        );
        assert_eq!(job.serial_seconds, 1.0);
        let results = job.results_file().unwrap();
        assert_eq!(results.len(), 3 * 9);
    }

    #[test]
    fn a_stopped_job_hands_out_nothing_more() {
        let mut job = MapJob::from_chunk_file(&chunk_file(&[&[1], &[2], &[3]])).unwrap();
        let (first, _, _) = job.next_chunk().unwrap();
        job.stop();
        assert!(job.next_chunk().is_none());
        job.requeue([first]);
        assert!(job.next_chunk().is_none());
        assert!(!job.is_done());
    }

    #[test]
    fn a_truncated_chunk_file_is_an_error() {
        let mut bytes = chunk_file(&[&[1, 2]]);
        bytes.pop();
        assert_eq!(
            MapJob::from_chunk_file(&bytes).unwrap_err(),
            ChunkFileError::Truncated
        );
    }
}
