//! Captured steps: the GPU work of one evaluation recorded as a CUDA graph (stream capture)
//! and replayed later with one launch, so a step that would cost the host hundreds of kernel
//! launches (a decode step: ~450) costs one.
//!
//! While a capture runs, kernels are recorded, not run, and the device memory they touch must
//! stay put for as long as the graph may replay:
//! - every block an op reads or writes is held by the capture (an `Arc` of its memory), so
//!   none goes back to the pool while the graph lives, not even when its array is dropped;
//! - a block freed during the capture (a kernel's scratch) is parked with the graph instead
//!   of the pool, for the same reason;
//! - the pool's misses are served by synchronous `cuMemAlloc` (a stream-ordered allocation
//!   would become a node of the graph), and its frees to the system wait until the capture
//!   ends; host buffers are uploaded with a synchronous copy (a copy from pageable memory
//!   cannot be captured).
//!
//! A replay writes the same addresses again: whatever changes from one step to the next must
//! reach the kernels through device memory (an input array whose bytes are overwritten before
//! a replay, see [`write`]), never through a value read on the host while the graph was
//! recorded. An op that needs the host mid-step (a CPU fallback, a download) makes the capture
//! fail with an error, and nothing was run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::result as cu;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use crate::array::{Array, Data, State};
use crate::error::{Error, Result};
use crate::memory::{Buffer, DeviceMemory};

use super::alloc::{free_to_pool, DeviceBlock};
use super::context::{cuda_err, gpu};

/// True while a capture records (read on every allocation, free and upload).
static CAPTURING: AtomicBool = AtomicBool::new(false);

/// What the running capture holds.
static HELD: Mutex<Option<Held>> = Mutex::new(None);

/// Blocks `cuMemAlloc` gave during captures (they go back with `cuMemFree`).
static SYNC_BLOCKS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The memory a graph reads and writes, kept from the pool while it may replay.
#[derive(Default)]
struct Held {
    /// Memory the recorded kernels touch.
    keep: Vec<Arc<dyn DeviceMemory>>,
    /// Blocks freed while recording: (address, block size), back to the pool with the graph.
    freed: Vec<(u64, usize)>,
    /// Pool frees to the system that came during the capture, done once it ends.
    deferred: Vec<(usize, usize)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for &(addr, size) in &self.freed {
            free_to_pool(addr, size);
        }
    }
}

/// True while a capture records.
pub(crate) fn capturing() -> bool {
    CAPTURING.load(Ordering::Acquire)
}

/// Holds `mem` for the running capture (a no-op when none runs).
pub(crate) fn hold(mem: &Arc<dyn DeviceMemory>) {
    if capturing() {
        if let Some(h) = lock(&HELD).as_mut() {
            h.keep.push(mem.clone());
        }
    }
}

/// Parks a block freed during a capture with it; false (the caller frees it) otherwise.
pub(crate) fn park_freed(addr: u64, size: usize) -> bool {
    if !capturing() {
        return false;
    }
    match lock(&HELD).as_mut() {
        Some(h) => {
            h.freed.push((addr, size));
            true
        }
        None => false,
    }
}

/// A fresh block for the pool during a capture: synchronous, so it is no node of the graph.
pub(crate) fn sync_alloc(size: usize) -> Option<usize> {
    // SAFETY: a plain device allocation.
    let p = unsafe { cu::malloc_sync(size) }.ok()? as usize;
    lock(&SYNC_BLOCKS).get_or_insert_with(HashSet::new).insert(p);
    Some(p)
}

/// Frees a pool block to the system the way it was allocated; during a capture, later.
/// Returns false if it came from `cuMemAllocAsync` and may be freed on the stream now.
pub(crate) fn sys_free_special(addr: usize, size: usize) -> bool {
    if capturing() {
        if let Some(h) = lock(&HELD).as_mut() {
            h.deferred.push((addr, size));
            return true;
        }
    }
    let was_sync = lock(&SYNC_BLOCKS).as_mut().is_some_and(|s| s.remove(&addr));
    if was_sync {
        if let Ok(g) = gpu(0) {
            // Kernels still reading it ran on the stream: wait for them first.
            let _ = g.stream.synchronize();
        }
        // SAFETY: addr came from cuMemAlloc and nothing uses it any more.
        let _ = unsafe { cu::free_sync(addr as cudarc::driver::sys::CUdeviceptr) };
    }
    was_sync
}

/// A recorded step: the instantiated graph and the memory it touches.
pub(crate) struct Captured {
    graph: CudaGraph,
    _held: Held,
}

// SAFETY: the graph is only launched under the `&self` of its owner, one call at a time (the
// evaluation lock serializes launches with other GPU work); the held memory is Send + Sync.
unsafe impl Send for Captured {}
// SAFETY: as above.
unsafe impl Sync for Captured {}

/// Clears the capture flag when dropped (whatever happened).
struct Recording;

impl Drop for Recording {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::Release);
    }
}

/// Evaluates `outputs` while recording the GPU work into a graph, then runs the graph once,
/// so `outputs` hold their values as after [`crate::eval`]. Fails (having run nothing) if
/// the evaluation does not finish on the GPU alone.
pub(crate) fn capture(outputs: &[&Array]) -> Result<Captured> {
    let g = gpu(0)?;
    g.bind()?;
    // Work queued before the capture must not be recorded: it is on the stream already, and
    // a capture only sees what is enqueued after it begins.
    *lock(&HELD) = Some(Held::default());
    g.stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .map_err(|e| cuda_err("beginning a stream capture", e))?;
    CAPTURING.store(true, Ordering::Release);
    let recording = Recording;
    let result = crate::eval::eval(outputs);
    drop(recording);
    let mut held = lock(&HELD).take().unwrap_or_default();
    let ended = g.stream.end_capture(CUgraphInstantiate_flags(0));
    for (addr, size) in std::mem::take(&mut held.deferred) {
        super::alloc::sys_free(addr, size);
    }
    result?;
    // Outputs that were already computed (or views of inputs) are held too.
    for a in outputs {
        if let State::Ready(d) = &*a.state() {
            if let Some(m) = d.buffer.device_memory() {
                held.keep.push(m.clone());
            }
        }
    }
    let graph = ended
        .map_err(|e| cuda_err("recording the step (an op needed the host mid-step?)", e))?
        .ok_or_else(|| Error::Device("CUDA: the recorded step is empty".into()))?;
    graph.launch().map_err(|e| cuda_err("launching a recorded step", e))?;
    Ok(Captured { graph, _held: held })
}

impl Drop for Captured {
    fn drop(&mut self) {
        // The graph and its memory go only once its last replay has finished.
        if let Ok(g) = gpu(0) {
            let _ = g.stream.synchronize();
        }
    }
}

impl Captured {
    /// Runs the recorded work again (enqueued on the GPU's stream).
    pub(crate) fn launch(&self) -> Result<()> {
        self.graph.launch().map_err(|e| cuda_err("launching a recorded step", e))
    }
}

/// `a` as a new array over the same device memory, with no host copy cached (the values a
/// replay wrote are read afresh).
pub(crate) fn fresh_view(a: &Array) -> Result<Array> {
    let d = a.data()?;
    let mem = d
        .buffer
        .device_memory()
        .ok_or_else(|| Error::Device("a recorded step's output is not in device memory".into()))?;
    let data = Data {
        buffer: Arc::new(Buffer::on_device(d.buffer.nbytes(), mem.clone())),
        offset: d.offset,
        strides: d.strides,
    };
    Ok(Array::from_data(a.shape().to_vec(), a.dtype(), data))
}

/// The device address and byte count of `a`: a row-major array in device memory from its
/// buffer's start (a recorded step's input or output). `who` names the caller in the error.
fn device_span(a: &Array, who: &'static str) -> Result<(u64, usize)> {
    let d = a.data()?;
    if d.offset != 0 || !d.is_row_contiguous(a.shape()) {
        return Err(Error::invalid(who, "the array must be row-major from its buffer's start"));
    }
    let mem = d.buffer.device_memory().ok_or_else(|| Error::invalid(who, "the array is not in device memory"))?;
    let block = mem
        .as_any()
        .downcast_ref::<DeviceBlock>()
        .ok_or_else(|| Error::Device("a buffer's device memory is not CUDA memory".into()))?;
    Ok((block.addr, a.nbytes()))
}

/// The span of a replay's input: as [`device_span`], and never read on the host (a host copy
/// would go stale when the bytes are overwritten).
fn input_span(input: &Array, who: &'static str) -> Result<(u64, usize)> {
    if !input.data()?.buffer.is_device_only() {
        return Err(Error::invalid(who, "the input must be computed on the GPU and never read on the host"));
    }
    device_span(input, who)
}

/// Overwrites the device bytes of `input` with `bytes`, ordered on the stream after the work
/// enqueued so far (the next replay reads them).
pub(crate) fn write(input: &Array, bytes: &[u8]) -> Result<()> {
    let (addr, n) = input_span(input, "Replay::write")?;
    if bytes.len() != n {
        return Err(Error::invalid("Replay::write", format!("{} bytes for an input of {n} bytes", bytes.len())));
    }
    let g = gpu(0)?;
    g.bind()?;
    // SAFETY: the block holds the input's bytes; a copy from pageable memory returns once the
    // source has been read.
    unsafe { cu::memcpy_htod_async(addr, bytes, g.stream.cu_stream()) }
        .map_err(|e| cuda_err("copying a step's input to the GPU", e))
}

/// Overwrites the device bytes of `input` with those of `output` (a recorded output, as the
/// latest replay enqueued left it), ordered on the stream: a step's result fed to the next
/// step without the host.
pub(crate) fn feed(output: &Array, input: &Array) -> Result<()> {
    let (to, n) = input_span(input, "Replay::feed")?;
    let (from, m) = device_span(output, "Replay::feed")?;
    if n != m {
        return Err(Error::invalid("Replay::feed", format!("an output of {m} bytes for an input of {n} bytes")));
    }
    let g = gpu(0)?;
    g.bind()?;
    // SAFETY: both blocks hold at least n bytes and live while the recording does.
    unsafe { cu::memcpy_dtod_async(to, from, n, g.stream.cu_stream()) }
        .map_err(|e| cuda_err("copying a step's output to its input", e))
}

/// Page-locked host memory that a replay's outputs are copied into on the stream, and the
/// event marking the copies' end: the host waits for that event, not for the stream, so work
/// enqueued after the copies (the next replay) keeps the GPU busy meanwhile.
pub(crate) struct Download {
    host: *mut u8,
    capacity: usize,
    event: cudarc::driver::sys::CUevent,
    /// The byte count of each output of the copies last enqueued.
    sizes: Vec<usize>,
}

// SAFETY: the host memory and the event are owned by this value alone; the driver's calls on
// them are thread-safe.
unsafe impl Send for Download {}

impl Download {
    /// A download with room for `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Result<Download> {
        let g = gpu(0)?;
        g.bind()?;
        // SAFETY: a plain page-locked allocation, freed in Drop.
        let host = unsafe { cu::malloc_host(capacity.max(1), 0) }
            .map_err(|e| cuda_err("allocating page-locked host memory", e))? as *mut u8;
        let event = match cu::event::create(cudarc::driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING) {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: allocated just above, never shared.
                let _ = unsafe { cu::free_host(host as *mut std::ffi::c_void) };
                return Err(cuda_err("creating an event", e));
            }
        };
        Ok(Download { host, capacity, event, sizes: Vec::new() })
    }

    /// The bytes this download holds room for.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Enqueues copies of `outputs` (row-major device arrays, at most the capacity in all)
    /// into this memory, back to back, then the event.
    pub(crate) fn start(&mut self, outputs: &[Array]) -> Result<()> {
        let g = gpu(0)?;
        g.bind()?;
        let stream = g.stream.cu_stream();
        self.sizes.clear();
        let mut at = 0;
        for o in outputs {
            let (addr, n) = device_span(o, "Replay::start")?;
            if at + n > self.capacity {
                return Err(Error::invalid("Replay::start", "the outputs outgrew their download"));
            }
            // SAFETY: [at, at + n) lies in this allocation; the event below is waited for
            // before the host reads it, and Drop waits before freeing it.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.host.add(at), n) };
            unsafe { cu::memcpy_dtoh_async(dst, addr, stream) }
                .map_err(|e| cuda_err("copying a step's outputs to the host", e))?;
            self.sizes.push(n);
            at += n;
        }
        // SAFETY: the event and the stream are alive.
        unsafe { cu::event::record(self.event, stream) }.map_err(|e| cuda_err("recording an event", e))
    }

    /// Waits for the copies [`Download::start`] enqueued; the bytes of each output.
    pub(crate) fn wait(&self) -> Result<Vec<Vec<u8>>> {
        // SAFETY: the event is alive.
        unsafe { cu::event::synchronize(self.event) }.map_err(|e| cuda_err("waiting for a step's outputs", e))?;
        let mut at = 0;
        Ok(self
            .sizes
            .iter()
            .map(|&n| {
                // SAFETY: the copies into [at, at + n) have finished.
                let v = unsafe { std::slice::from_raw_parts(self.host.add(at), n) }.to_vec();
                at += n;
                v
            })
            .collect())
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // SAFETY: copies into the memory may still be enqueued: wait for them before freeing.
        unsafe {
            let _ = cu::event::synchronize(self.event);
            let _ = cu::event::destroy(self.event);
            let _ = cu::free_host(self.host as *mut std::ffi::c_void);
        }
    }
}
