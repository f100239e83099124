//! Recorded steps: the device work of one evaluation recorded once and run again with one
//! launch (a CUDA graph on a GPU), for loops that repeat the same step — an LLM's decode step
//! costs hundreds of kernel launches and as many graph nodes built, walked and freed on the
//! host each token; a replay costs one launch.
//!
//! A replay runs exactly the recorded kernels on exactly the recorded memory, so the step
//! must be built for it:
//! - what changes between steps enters through *inputs*: arrays computed on the GPU before
//!   the recording (so their bytes live in device memory), overwritten with
//!   [`Replay::write`] before each replay — never through host values (a Rust integer turned
//!   into an array, a shape), which the recording fixes;
//! - state carried between steps (a KV cache) is updated in place (`put_along_axis` or
//!   `slice_update` into a buffer nobody else holds);
//! - the arrays a replay returns share the recorded outputs' memory: read them before the next
//!   replay.
//!
//! A loop need not wait for one step before it enqueues the next: [`Replay::feed`] copies an
//! output of the latest replay into an input on the device (a decode step's token into the
//! next step), and [`Replay::start`] enqueues a replay whose outputs reach the host as it
//! finishes ([`Started::wait`]), so the host reads step k while step k + 1 runs.
//!
//! Only a GPU records; [`Replay::record`] returns `None` on other devices (the caller evaluates as
//! usual).

use crate::array::Array;
use crate::error::Result;

/// A recorded step (see the module documentation).
pub struct Replay {
    #[cfg(feature = "cuda")]
    captured: crate::backend::cuda::graph::Captured,
    outputs: Vec<Array>,
    /// Page-locked memory of finished [`Started`] replays, for the next ones.
    #[cfg(feature = "cuda")]
    downloads: std::sync::Arc<std::sync::Mutex<Vec<crate::backend::cuda::graph::Download>>>,
}

/// A replay enqueued by [`Replay::start`]; its outputs' values arrive in host memory as it
/// finishes.
pub struct Started {
    #[cfg(feature = "cuda")]
    download: Option<crate::backend::cuda::graph::Download>,
    #[cfg(feature = "cuda")]
    pool: std::sync::Arc<std::sync::Mutex<Vec<crate::backend::cuda::graph::Download>>>,
    /// The outputs' shapes and dtypes.
    layouts: Vec<(Vec<usize>, crate::Dtype)>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started").field("outputs", &self.layouts.len()).finish()
    }
}

impl Started {
    /// Waits for the replay to finish and returns its outputs as host arrays.
    pub fn wait(self) -> Result<Vec<Array>> {
        #[cfg(feature = "cuda")]
        {
            let bytes = self.download.as_ref().expect("held until dropped").wait()?;
            bytes.iter().zip(&self.layouts).map(|(b, (shape, dtype))| Array::from_bytes(b, shape, *dtype)).collect()
        }
        #[cfg(not(feature = "cuda"))]
        unreachable!("a Replay exists only on a GPU")
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        #[cfg(feature = "cuda")]
        if let Some(d) = self.download.take() {
            // Reused by a later start, which enqueues its copies after this one's.
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(d);
        }
    }
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").field("outputs", &self.outputs.len()).finish()
    }
}

impl Replay {
    /// Evaluates `outputs` (as [`crate::eval`] does) while recording the device work, or
    /// returns `Ok(None)` having done nothing when the current stream
    /// ([`crate::device::current_stream`]) is not on a GPU.
    ///
    /// Fails if the step does not run on the GPU alone (an op falling back to the CPU, a
    /// value read on the host mid-step); the arrays it was evaluating are then unusable
    /// (nothing ran): rebuild them.
    pub fn record(outputs: &[&Array]) -> Result<Option<Replay>> {
        #[cfg(feature = "cuda")]
        if let crate::Device::Gpu(0) = crate::device::current_stream().device {
            let captured = crate::backend::cuda::graph::capture(outputs)?;
            let outputs = outputs.iter().map(|a| (*a).clone()).collect();
            return Ok(Some(Replay { captured, outputs, downloads: Default::default() }));
        }
        let _ = outputs;
        Ok(None)
    }

    /// Runs the recorded step again and returns its outputs (new arrays over the recorded
    /// outputs' memory: valid until the next replay).
    pub fn replay(&self) -> Result<Vec<Array>> {
        #[cfg(feature = "cuda")]
        {
            self.captured.launch()?;
            self.outputs.iter().map(crate::backend::cuda::graph::fresh_view).collect()
        }
        #[cfg(not(feature = "cuda"))]
        unreachable!("a Replay exists only on a GPU")
    }

    /// Enqueues the recorded step again without waiting for it, and the copies of its
    /// outputs to host memory; [`Started::wait`] returns them. Inputs written or fed before
    /// this call are what it reads; the outputs' device memory is, as after [`Replay::replay`],
    /// the recorded outputs' (fed from by [`Replay::feed`]).
    pub fn start(&self) -> Result<Started> {
        let layouts: Vec<_> = self.outputs.iter().map(|a| (a.shape().to_vec(), a.dtype())).collect();
        #[cfg(feature = "cuda")]
        {
            use crate::backend::cuda::graph::Download;
            let need: usize = self.outputs.iter().map(Array::nbytes).sum();
            let reused = self.downloads.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut download = match reused {
                Some(d) if d.capacity() >= need => d,
                _ => Download::new(need)?,
            };
            self.captured.launch()?;
            download.start(&self.outputs)?;
            Ok(Started { download: Some(download), pool: self.downloads.clone(), layouts })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = layouts;
            unreachable!("a Replay exists only on a GPU")
        }
    }

    /// Overwrites the device bytes of `input` (as [`Replay::write`] requires it) with those of
    /// recorded output `output` as the replays enqueued so far leave them, on the device and
    /// in order with them: a step's result becomes the next step's input without the host.
    pub fn feed(&self, output: usize, input: &Array) -> Result<()> {
        let out = self.outputs.get(output).ok_or_else(|| {
            crate::Error::invalid("Replay::feed", format!("output {output} of a step with {}", self.outputs.len()))
        })?;
        #[cfg(feature = "cuda")]
        {
            crate::backend::cuda::graph::feed(out, input)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (out, input);
            unreachable!("a Replay exists only on a GPU")
        }
    }

    /// Overwrites the device bytes of `input` (a row-major array computed on the GPU and never
    /// read on the host) with `bytes`, for the next replay to read.
    pub fn write(&self, input: &Array, bytes: &[u8]) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            crate::backend::cuda::graph::write(input, bytes)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (input, bytes);
            unreachable!("a Replay exists only on a GPU")
        }
    }
}
