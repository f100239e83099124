//! Device memory: a caching pool of plain stream-ordered allocations, uploads and downloads.
//!
//! Blocks come from `cuMemAllocAsync` on the GPU's stream and go back with `cuMemFreeAsync`
//! when the cache lets them go; in between, a freed block waits in the same size-keyed cache
//! the host uses ([`crate::memory::Pool`]), so its bytes count in `active_memory`,
//! `peak_memory` and `cache_memory`, and its limit (default: the device's memory) gives a clear
//! out-of-memory error. A cached block is reused by later work on the same stream, so its old
//! readers are done before the new writer runs. Never managed memory.

use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::result as cu;

use crate::array::{row_major_strides, Data};
use crate::device::Device;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::memory::{Buffer, DeviceMemory, Pool};

use super::context::{cuda_err, gpu, started, Gpu};
use super::graph;

fn sys_alloc(size: usize) -> Option<usize> {
    let g = started()?;
    g.bind().ok()?;
    if graph::capturing() {
        return graph::sync_alloc(size);
    }
    // SAFETY: an allocation on our live stream.
    unsafe { cu::malloc_async(g.stream.cu_stream(), size) }.ok().map(|p| p as usize)
}

/// Gives a pool block back to the system (stream-ordered, unless a capture says otherwise).
pub(crate) fn sys_free(addr: usize, size: usize) {
    if graph::sys_free_special(addr, size) {
        return;
    }
    if let Some(g) = started() {
        if g.bind().is_ok() {
            // SAFETY: addr came from malloc_async; freeing is ordered after the work that used it.
            let _ = unsafe { cu::free_async(addr as cudarc::driver::sys::CUdeviceptr, g.stream.cu_stream()) };
        }
    }
}

fn device_memory_size() -> usize {
    started().and_then(|g| g.ctx.total_mem().ok()).unwrap_or(usize::MAX)
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new("GPU 0", sys_alloc, sys_free, device_memory_size));

fn pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the device pool (memory statistics and limits).
pub(crate) fn with_device_pool(f: impl FnOnce(&mut Pool)) {
    f(&mut pool());
}

/// A block of device memory from the pool, returned to it on drop.
pub(crate) struct DeviceBlock {
    pub addr: u64,
    size: usize,
}

impl DeviceBlock {
    /// A block of at least `nbytes` (uninitialized).
    pub(crate) fn new(nbytes: usize) -> Result<DeviceBlock> {
        let (addr, size) = pool().allocate(nbytes)?;
        Ok(DeviceBlock { addr: addr as u64, size })
    }
}

impl Drop for DeviceBlock {
    fn drop(&mut self) {
        if !graph::park_freed(self.addr, self.size) {
            pool().free(self.addr as usize, self.size);
        }
    }
}

/// Returns a block to the pool's cache (a recorded step's parked blocks, when it goes).
pub(crate) fn free_to_pool(addr: u64, size: usize) {
    pool().free(addr as usize, size);
}

impl DeviceMemory for DeviceBlock {
    fn device(&self) -> Device {
        Device::Gpu(0)
    }

    fn copy_to_host(&self, dst: &mut [u8]) -> Result<()> {
        let g = gpu(0)?;
        g.bind()?;
        let start = crate::profile::enabled().then(std::time::Instant::now);
        let _record =
            start.map(|t| Finally(move || crate::profile::record_step("GPU → host reads: wait + copy", t.elapsed())));
        // SAFETY: the block holds at least dst.len() bytes; the stream orders the copy after
        // the kernels that write the block, and we wait for it before returning.
        unsafe {
            cu::memcpy_dtoh_async(dst, self.addr, g.stream.cu_stream())
                .map_err(|e| cuda_err("copying to the host", e))?;
        }
        g.stream.synchronize().map_err(|e| cuda_err("waiting for the GPU", e))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Runs its closure when dropped.
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The device address of `d`'s first element, uploading its buffer first if it is only on
/// the host.
pub(crate) fn device_ptr(g: &Gpu, d: &Data, dtype: Dtype) -> Result<u64> {
    let buf = &d.buffer;
    let mem = match buf.device_memory() {
        Some(m) => m,
        None => {
            let block = DeviceBlock::new(buf.nbytes())?;
            if buf.nbytes() > 0 && graph::capturing() {
                // A copy from pageable memory cannot be recorded: copy now (the bytes are
                // fixed for the graph's life, like the weights).
                // SAFETY: the block holds nbytes.
                unsafe { cu::memcpy_htod_sync(block.addr, buf.as_bytes()) }
                    .map_err(|e| cuda_err("copying to the GPU", e))?;
            } else if buf.nbytes() > 0 {
                // SAFETY: the block holds nbytes; a copy from pageable memory returns once the
                // source has been read, so the host buffer may go at any time after.
                unsafe {
                    cu::memcpy_htod_async(block.addr, buf.as_bytes(), g.stream.cu_stream())
                        .map_err(|e| cuda_err("copying to the GPU", e))?;
                }
            }
            buf.set_device_memory(Arc::new(block))
        }
    };
    graph::hold(mem);
    let block = mem
        .as_any()
        .downcast_ref::<DeviceBlock>()
        .ok_or_else(|| crate::Error::Device("a buffer's device memory is not CUDA memory".into()))?;
    Ok(block.addr + (d.offset * dtype.size()) as u64)
}

/// A fresh row-major output of `shape` and `dtype` on the device, and its address.
pub(crate) fn alloc_out(shape: &[usize], dtype: Dtype) -> Result<(Data, u64)> {
    let nbytes = shape.iter().product::<usize>() * dtype.size();
    let block = DeviceBlock::new(nbytes)?;
    let addr = block.addr;
    let mem: Arc<dyn DeviceMemory> = Arc::new(block);
    graph::hold(&mem);
    let data = Data { buffer: Arc::new(Buffer::on_device(nbytes, mem)), offset: 0, strides: row_major_strides(shape) };
    Ok((data, addr))
}
