//! The GPU: its context, its one stream, its compiled kernels and its cuBLAS handle.
//!
//! All work for a GPU is enqueued on one stream, so kernels, copies and the reuse of cached
//! memory are ordered without events. Only GPU 0 has a backend for now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

use crate::error::{Error, Result};

/// One GPU and what ferrox keeps for it.
pub(crate) struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// "sm_90" for an H100.
    pub arch: String,
    /// The CUDA driver's version (13000 for 13.0).
    pub driver: i32,
    /// Multiprocessors, to size grids.
    pub sms: u32,
    /// Whether kernels may launch overlapped with the one before (programmatic dependent
    /// launch: compute capability 9.0 and later).
    pub overlapped_launch: bool,
    /// Loaded modules by name ("elementwise f32").
    pub(crate) modules: Mutex<HashMap<String, Arc<CudaModule>>>,
    /// Functions by "module\0function name".
    pub(crate) functions: Mutex<HashMap<String, CudaFunction>>,
    pub(crate) blas: Mutex<Option<CudaBlas>>,
}

// SAFETY: cudarc's handles are used under the mutexes above or are thread-safe driver objects.
unsafe impl Send for Gpu {}
// SAFETY: as above.
unsafe impl Sync for Gpu {}

/// A CUDA error as ferrox's error, naming what was being done.
pub(crate) fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("CUDA: {what} failed: {e:?}"))
}

static GPU0: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();

fn libraries_present() -> bool {
    // SAFETY: these only try to open the shared libraries.
    unsafe {
        cudarc::driver::sys::is_culib_present()
            && cudarc::nvrtc::sys::is_culib_present()
            && cudarc::cublas::sys::is_culib_present()
    }
}

fn init() -> std::result::Result<Arc<Gpu>, String> {
    if !libraries_present() {
        return Err("the CUDA driver, NVRTC or cuBLAS library was not found".into());
    }
    if CudaContext::device_count().map_err(|e| format!("{e:?}"))? < 1 {
        return Err("no CUDA device".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("creating the CUDA context: {e:?}"))?;
    let stream = ctx.new_stream().map_err(|e| format!("creating a stream: {e:?}"))?;
    let (major, minor) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
    let sms = ctx
        .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| format!("{e:?}"))? as u32;
    let mut driver = 0i32;
    // SAFETY: writes one int.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) };
    Ok(Arc::new(Gpu {
        ctx,
        stream,
        arch: format!("sm_{major}{minor}"),
        driver,
        sms,
        overlapped_launch: major >= 9,
        modules: Mutex::new(HashMap::new()),
        functions: Mutex::new(HashMap::new()),
        blas: Mutex::new(None),
    }))
}

/// GPU `ordinal`, started on first use.
pub(crate) fn gpu(ordinal: usize) -> Result<&'static Arc<Gpu>> {
    if ordinal != 0 {
        return Err(Error::Device(format!("Gpu({ordinal}): only GPU 0 has a backend so far")));
    }
    GPU0.get_or_init(init).as_ref().map_err(|e| Error::Device(format!("no usable GPU: {e}")))
}

/// GPU 0 if it was started (for memory statistics, which must not start it).
pub(crate) fn started() -> Option<&'static Arc<Gpu>> {
    GPU0.get().and_then(|g| g.as_ref().ok())
}

impl Gpu {
    /// Makes the context current on this thread (cheap when it already is).
    pub(crate) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| cuda_err("binding the context", e))
    }

    /// Grid size for `n` independent items with `block` threads each handling one (grid-stride
    /// loops pick up the rest).
    pub(crate) fn grid(&self, n: usize, block: u32) -> u32 {
        let want = n.div_ceil(block as usize).max(1);
        want.min(self.sms as usize * 32) as u32
    }
}

/// The number of usable GPUs (0 without the driver, NVRTC, cuBLAS or a device; only GPU 0 is
/// used so far). Never fails: problems are reported when a GPU op runs.
pub fn device_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| usize::from(gpu(0).is_ok()))
}

/// The name of GPU 0 and its architecture ("NVIDIA H100 80GB HBM3 (sm_90)"), if there is one.
pub fn device_name() -> Option<String> {
    let g = gpu(0).ok()?;
    Some(format!("{} ({}, driver {})", g.ctx.name().ok()?, g.arch, g.driver))
}

/// Waits until the GPU has finished all the work enqueued so far (for timing; reading an
/// array's values waits by itself).
pub fn synchronize() -> Result<()> {
    match started() {
        Some(g) => g.stream.synchronize().map_err(|e| cuda_err("synchronizing the stream", e)),
        None => Ok(()),
    }
}
