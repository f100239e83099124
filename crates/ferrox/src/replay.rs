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
//! Only a GPU records; [`Replay::record`] returns `None` on other devices (the caller evaluates as
//! usual).

use crate::array::Array;
use crate::error::Result;

/// A recorded step (see the module documentation).
pub struct Replay {
    #[cfg(feature = "cuda")]
    captured: crate::backend::cuda::graph::Captured,
    outputs: Vec<Array>,
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
            return Ok(Some(Replay { captured, outputs }));
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
