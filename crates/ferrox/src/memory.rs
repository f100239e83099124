//! Buffers and the caching allocator: active, peak and cached memory, and their limits.
//!
//! Host buffers are 64-byte aligned allocations. A freed buffer goes to a size-keyed cache
//! (while the cache is under its limit) and is handed out again to the next allocation of
//! the same size or slightly smaller, which is what an LLM decode loop asks for every token.
//! `active_memory` counts the bytes of live allocations, `cache_memory` those parked in the
//! cache; memory-mapped file data (safetensors) is the page cache's, not ours, and counts in
//! neither. An allocation that would take active memory past the limit first empties the cache,
//! then fails with [`Error::OutOfMemory`].

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::device::Device;
use crate::error::{Error, Result};

const ALIGN: usize = 64;

/// A caching allocator over one kind of memory (host, or a GPU's), with its counters.
///
/// Blocks are addresses (`usize`): host pointers or device pointers alike. The system
/// allocation, release and default limit are plain functions so the host pool is a `static`;
/// the CUDA backend keeps a second pool of device memory with the same policy.
pub(crate) struct Pool {
    active: usize,
    peak: usize,
    cached: usize,
    memory_limit: usize,
    cache_limit: usize,
    /// Cached blocks by size. A size's list stays when it empties, so a loop that frees and
    /// takes back the same sizes (a decode step) allocates no list or tree node each time.
    free: BTreeMap<usize, Vec<usize>>,
    /// Which memory this is, for error messages ("host", "GPU 0").
    what: &'static str,
    sys_alloc: fn(usize) -> Option<usize>,
    sys_free: fn(usize, usize),
    default_limit: fn() -> usize,
}

impl Pool {
    /// An empty pool over the given system allocator.
    pub(crate) const fn new(
        what: &'static str,
        sys_alloc: fn(usize) -> Option<usize>,
        sys_free: fn(usize, usize),
        default_limit: fn() -> usize,
    ) -> Pool {
        Pool {
            active: 0,
            peak: 0,
            cached: 0,
            memory_limit: 0,
            cache_limit: usize::MAX,
            free: BTreeMap::new(),
            what,
            sys_alloc,
            sys_free,
            default_limit,
        }
    }

    fn limit(&mut self) -> usize {
        if self.memory_limit == 0 {
            self.memory_limit = (self.default_limit)();
        }
        self.memory_limit
    }

    fn release_cache(&mut self) {
        for (size, addrs) in std::mem::take(&mut self.free) {
            for a in addrs {
                (self.sys_free)(a, size);
            }
        }
        self.cached = 0;
    }

    fn trim_cache_to(&mut self, limit: usize) {
        while self.cached > limit {
            let Some((&size, addrs)) = self.free.iter_mut().rev().find(|(_, a)| !a.is_empty()) else { break };
            let a = addrs.pop().expect("found non-empty");
            self.cached -= size;
            (self.sys_free)(a, size);
        }
    }

    /// A block of at least `nbytes`: (address, block size).
    pub(crate) fn allocate(&mut self, nbytes: usize) -> Result<(usize, usize)> {
        let size = block_size(nbytes.max(1));
        // Reuse a cached block no more than 1/8 larger than asked.
        let hit = self.free.range_mut(size..=size + size / 8).find_map(|(&s, addrs)| Some((s, addrs.pop()?)));
        if let Some((s, a)) = hit {
            self.cached -= s;
            self.active += s;
            self.peak = self.peak.max(self.active);
            return Ok((a, s));
        }
        let limit = self.limit();
        if self.active + size > limit {
            self.release_cache();
            if self.active + size > limit {
                return Err(Error::OutOfMemory(format!(
                    "allocating {size} bytes of {} memory with {} bytes active would pass the memory limit of \
                     {limit} bytes (raise it with set_memory_limit)",
                    self.what, self.active
                )));
            }
        }
        if self.active + self.cached + size > limit {
            self.release_cache();
        }
        let a = match (self.sys_alloc)(size) {
            Some(a) => a,
            None => {
                // The system may be short while we park blocks: give them back and try again.
                self.release_cache();
                (self.sys_alloc)(size).ok_or_else(|| {
                    Error::OutOfMemory(format!(
                        "the system refused an allocation of {size} bytes of {} memory ({} bytes active)",
                        self.what, self.active
                    ))
                })?
            }
        };
        self.active += size;
        self.peak = self.peak.max(self.active);
        Ok((a, size))
    }

    /// Returns a block from [`Pool::allocate`] to the cache (or the system past the cache limit).
    pub(crate) fn free(&mut self, addr: usize, size: usize) {
        self.active -= size;
        if self.cached + size <= self.cache_limit {
            self.cached += size;
            self.free.entry(size).or_default().push(addr);
        } else {
            (self.sys_free)(addr, size);
        }
    }
}

fn host_alloc(size: usize) -> Option<usize> {
    // SAFETY: size is non-zero and ALIGN a power of two.
    let raw = unsafe { alloc::alloc(Layout::from_size_align_unchecked(size, ALIGN)) };
    (!raw.is_null()).then_some(raw as usize)
}

fn host_free(addr: usize, size: usize) {
    // SAFETY: allocated by host_alloc with this size and alignment.
    unsafe { alloc::dealloc(addr as *mut u8, Layout::from_size_align_unchecked(size, ALIGN)) };
}

static HOST: Mutex<Pool> = Mutex::new(Pool::new("host", host_alloc, host_free, system_memory));

fn pool() -> MutexGuard<'static, Pool> {
    HOST.lock().unwrap_or_else(|e| e.into_inner())
}

/// Physical memory of this machine (the default memory limit), from /proc/meminfo.
fn system_memory() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(16 << 30)
}

/// Rounds a request up to the block size the pool hands out.
fn block_size(nbytes: usize) -> usize {
    if nbytes <= 4096 {
        nbytes.div_ceil(ALIGN) * ALIGN
    } else {
        nbytes.div_ceil(4096) * 4096
    }
}

/// Runs `f` on every pool: the host's, then each device's.
fn each_pool(mut f: impl FnMut(&mut Pool)) {
    f(&mut pool());
    #[cfg(feature = "cuda")]
    crate::backend::cuda::with_device_pool(f);
}

fn sum(f: impl Fn(&mut Pool) -> usize) -> usize {
    let mut total = 0;
    each_pool(|p| total += f(p));
    total
}

/// Bytes held by live arrays (not counting the cache): host memory plus, with the `cuda`
/// feature, device memory.
pub fn active_memory() -> usize {
    sum(|p| p.active)
}

/// The highest [`active_memory`] since the start or the last [`reset_peak_memory`] (with a GPU,
/// the sum of the host's and the device's peaks).
pub fn peak_memory() -> usize {
    sum(|p| p.peak)
}

/// Sets the peak to the current active memory.
pub fn reset_peak_memory() {
    each_pool(|p| p.peak = p.active);
}

/// Bytes of freed buffers kept for reuse (host and device).
pub fn cache_memory() -> usize {
    sum(|p| p.cached)
}

/// The memory limit in bytes (default: the machine's physical memory). With a GPU, each memory
/// has its own limit (the device's defaults to its capacity); this is the host's.
pub fn memory_limit() -> usize {
    pool().limit()
}

/// Sets the limit on active memory of each memory (host, and device with a GPU) and returns
/// the previous host limit. Allocations past it fail with [`Error::OutOfMemory`].
pub fn set_memory_limit(bytes: usize) -> usize {
    let old = pool().limit();
    each_pool(|p| p.memory_limit = bytes.max(1));
    old
}

/// Sets the limit on cached memory (of each memory) and returns the previous one; 0 disables
/// the cache.
pub fn set_cache_limit(bytes: usize) -> usize {
    let old = pool().cache_limit;
    each_pool(|p| {
        p.cache_limit = bytes;
        p.trim_cache_to(bytes);
    });
    old
}

/// Frees every cached buffer.
pub fn clear_cache() {
    each_pool(|p| p.release_cache());
}

/// Memory that a device backend owns (a GPU allocation); the CUDA backend implements it.
pub trait DeviceMemory: Send + Sync {
    /// The device the memory is on.
    fn device(&self) -> Device;
    /// Copies the contents to host memory (waiting for the device work that writes them).
    fn copy_to_host(&self, dst: &mut [u8]) -> Result<()>;
    /// The backend's own type, to reach its device pointer.
    fn as_any(&self) -> &dyn std::any::Any;
}

enum HostStorage {
    /// An allocation from the pool (pointer, block size).
    Owned(NonNull<u8>, usize),
    /// Bytes inside a memory-mapped file.
    Mapped(Arc<memmap2::Mmap>, usize),
    /// A zero-byte buffer.
    Empty,
}

impl HostStorage {
    fn ptr(&self) -> *const u8 {
        match self {
            HostStorage::Owned(p, _) => p.as_ptr(),
            HostStorage::Mapped(m, off) => m[*off..].as_ptr(),
            HostStorage::Empty => NonNull::<u64>::dangling().as_ptr() as *const u8,
        }
    }
}

impl Drop for HostStorage {
    fn drop(&mut self) {
        if let HostStorage::Owned(p, size) = *self {
            pool().free(p.as_ptr() as usize, size);
        }
    }
}

/// A block of bytes that arrays view: one memory that may live on the host, on a device, or
/// both.
///
/// A buffer made by a CPU kernel (or a file) starts on the host; one made by a GPU kernel
/// starts on the device. The other copy is made the first time the other side reads it
/// ([`Buffer::host_ptr`] downloads; the CUDA backend uploads), and kept: a buffer's bytes never
/// change once it is shared, so both copies stay equal. The user never copies.
pub struct Buffer {
    nbytes: usize,
    host: OnceLock<HostStorage>,
    device: OnceLock<Arc<dyn DeviceMemory>>,
}

// SAFETY: the host memory is owned by the buffer (or by an immutable mmap) and only written
// before the buffer is shared.
unsafe impl Send for Buffer {}
// SAFETY: as above; shared access is read-only (the lazily made copies are behind OnceLock).
unsafe impl Sync for Buffer {}

impl Buffer {
    fn with_host(nbytes: usize, host: HostStorage) -> Buffer {
        Buffer { nbytes, host: OnceLock::from(host), device: OnceLock::new() }
    }

    /// An uninitialized host buffer of `nbytes`, from the pool.
    pub fn alloc(nbytes: usize) -> Result<Buffer> {
        Ok(Buffer::with_host(nbytes, host_block(nbytes)?))
    }

    /// A zero-filled host buffer of `nbytes`.
    pub fn zeroed(nbytes: usize) -> Result<Buffer> {
        let b = Buffer::alloc(nbytes)?;
        // SAFETY: the buffer owns nbytes writable bytes.
        unsafe { std::ptr::write_bytes(b.host_ptr() as *mut u8, 0, nbytes) };
        Ok(b)
    }

    /// A buffer over `len` bytes of a memory map starting at `offset` (no copy).
    pub fn mapped(map: Arc<memmap2::Mmap>, offset: usize, len: usize) -> Buffer {
        assert!(offset + len <= map.len());
        Buffer::with_host(len, HostStorage::Mapped(map, offset))
    }

    /// A buffer of `nbytes` whose only copy is on a device (the output of a GPU kernel).
    pub fn on_device(nbytes: usize, mem: Arc<dyn DeviceMemory>) -> Buffer {
        let device = OnceLock::from(mem);
        let host = if nbytes == 0 { OnceLock::from(HostStorage::Empty) } else { OnceLock::new() };
        Buffer { nbytes, host, device }
    }

    /// Size in bytes.
    pub fn nbytes(&self) -> usize {
        self.nbytes
    }

    /// True if the bytes are on the host (no download needed to read them there).
    pub fn is_on_host(&self) -> bool {
        self.host.get().is_some()
    }

    /// Makes sure the bytes are on the host, downloading them from the device if needed.
    pub fn ensure_host(&self) -> Result<()> {
        if self.host.get().is_some() {
            return Ok(());
        }
        let dev = self.device.get().expect("a buffer has a host or a device copy");
        let block = host_block(self.nbytes)?;
        // SAFETY: the block is fresh and owns nbytes writable bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(block.ptr() as *mut u8, self.nbytes) };
        dev.copy_to_host(dst)?;
        // Another thread may have downloaded it meanwhile: then ours is dropped (freed).
        let _ = self.host.set(block);
        Ok(())
    }

    /// Pointer to the host bytes, downloading them first if they are only on a device.
    ///
    /// # Panics
    /// If that download fails (the device failed, or host memory ran out); backends call
    /// [`Buffer::ensure_host`] first to get the error as a value.
    pub fn host_ptr(&self) -> *const u8 {
        match self.host.get() {
            Some(h) => h.ptr(),
            None => {
                if let Err(e) = self.ensure_host() {
                    panic!("copying a device buffer to the host failed: {e}");
                }
                self.host.get().expect("ensure_host filled it").ptr()
            }
        }
    }

    /// The host bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: host_ptr points at nbytes initialized bytes.
        unsafe { std::slice::from_raw_parts(self.host_ptr(), self.nbytes) }
    }

    /// The host bytes, writable: only while the buffer is not yet shared. A device copy, if
    /// any, is dropped (it would no longer match).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        if self.host.get().is_none() {
            if let Err(e) = self.ensure_host() {
                panic!("copying a device buffer to the host failed: {e}");
            }
        }
        self.device.take();
        assert!(!matches!(self.host.get(), Some(HostStorage::Mapped(..))), "a mapped buffer is read-only");
        // SAFETY: we hold the only reference and own the allocation.
        unsafe { std::slice::from_raw_parts_mut(self.host_ptr() as *mut u8, self.nbytes) }
    }

    /// True if the bytes live only in host memory this buffer owns (not a file map, no device
    /// copy): the one kind of buffer a kernel may write in place once nothing else holds it.
    pub(crate) fn is_owned_host_only(&self) -> bool {
        matches!(self.host.get(), Some(HostStorage::Owned(..))) && self.device.get().is_none()
    }

    /// True if the bytes live only in device memory (no host copy): the one kind of buffer a
    /// GPU kernel may write in place once nothing else holds it.
    #[cfg(feature = "cuda")]
    pub(crate) fn is_device_only(&self) -> bool {
        self.host.get().is_none() && self.device.get().is_some()
    }

    /// The device copy, if there is one.
    pub fn device_memory(&self) -> Option<&Arc<dyn DeviceMemory>> {
        self.device.get()
    }

    /// Attaches a device copy of the same bytes and returns the one the buffer keeps (an
    /// earlier one, if another thread attached it first).
    pub fn set_device_memory(&self, mem: Arc<dyn DeviceMemory>) -> &Arc<dyn DeviceMemory> {
        let _ = self.device.set(mem);
        self.device.get().expect("just set")
    }
}

/// A host block of `nbytes` from the pool (none for zero bytes).
fn host_block(nbytes: usize) -> Result<HostStorage> {
    if nbytes == 0 {
        return Ok(HostStorage::Empty);
    }
    let (addr, size) = pool().allocate(nbytes)?;
    Ok(HostStorage::Owned(NonNull::new(addr as *mut u8).expect("the allocator returns non-null"), size))
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.nbytes)
    }
}
