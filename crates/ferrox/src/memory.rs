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
use std::sync::{Arc, Mutex};

use crate::device::Device;
use crate::error::{Error, Result};

const ALIGN: usize = 64;

struct Pool {
    active: usize,
    peak: usize,
    cached: usize,
    memory_limit: usize,
    cache_limit: usize,
    free: BTreeMap<usize, Vec<SendPtr>>,
}

struct SendPtr(NonNull<u8>);
// SAFETY: the pointer is an owned, unaliased heap block while it sits in the cache.
unsafe impl Send for SendPtr {}

static POOL: Mutex<Pool> =
    Mutex::new(Pool { active: 0, peak: 0, cached: 0, memory_limit: 0, cache_limit: usize::MAX, free: BTreeMap::new() });

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
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

impl Pool {
    fn limit(&mut self) -> usize {
        if self.memory_limit == 0 {
            self.memory_limit = system_memory();
        }
        self.memory_limit
    }

    fn release_cache(&mut self) {
        for (size, ptrs) in std::mem::take(&mut self.free) {
            for p in ptrs {
                // SAFETY: allocated in `allocate` with this size and alignment.
                unsafe { alloc::dealloc(p.0.as_ptr(), Layout::from_size_align_unchecked(size, ALIGN)) };
            }
        }
        self.cached = 0;
    }

    fn trim_cache_to(&mut self, limit: usize) {
        while self.cached > limit {
            let Some((&size, _)) = self.free.iter().next_back() else { break };
            let ptrs = self.free.get_mut(&size).unwrap();
            let p = ptrs.pop().unwrap();
            if ptrs.is_empty() {
                self.free.remove(&size);
            }
            self.cached -= size;
            // SAFETY: allocated in `allocate` with this size and alignment.
            unsafe { alloc::dealloc(p.0.as_ptr(), Layout::from_size_align_unchecked(size, ALIGN)) };
        }
    }
}

/// Rounds a request up to the block size the pool hands out.
fn block_size(nbytes: usize) -> usize {
    if nbytes <= 4096 {
        nbytes.div_ceil(ALIGN) * ALIGN
    } else {
        nbytes.div_ceil(4096) * 4096
    }
}

fn allocate(nbytes: usize) -> Result<(NonNull<u8>, usize)> {
    let size = block_size(nbytes.max(1));
    let mut p = pool();
    // Reuse a cached block no more than 1/8 larger than asked.
    let hit = p.free.range(size..=size + size / 8).next().map(|(&s, _)| s);
    if let Some(s) = hit {
        let ptrs = p.free.get_mut(&s).unwrap();
        let ptr = ptrs.pop().unwrap();
        if ptrs.is_empty() {
            p.free.remove(&s);
        }
        p.cached -= s;
        p.active += s;
        p.peak = p.peak.max(p.active);
        return Ok((ptr.0, s));
    }
    let limit = p.limit();
    if p.active + size > limit {
        p.release_cache();
        if p.active + size > limit {
            return Err(Error::OutOfMemory(format!(
                "allocating {size} bytes with {} bytes active would pass the memory limit of {limit} bytes \
                 (raise it with set_memory_limit)",
                p.active
            )));
        }
    }
    if p.active + p.cached + size > limit {
        p.release_cache();
    }
    // SAFETY: size is non-zero and ALIGN a power of two.
    let raw = unsafe { alloc::alloc(Layout::from_size_align_unchecked(size, ALIGN)) };
    let ptr = NonNull::new(raw)
        .ok_or_else(|| Error::OutOfMemory(format!("the system refused an allocation of {size} bytes")))?;
    p.active += size;
    p.peak = p.peak.max(p.active);
    Ok((ptr, size))
}

fn free(ptr: NonNull<u8>, size: usize) {
    let mut p = pool();
    p.active -= size;
    if p.cached + size <= p.cache_limit {
        p.cached += size;
        p.free.entry(size).or_default().push(SendPtr(ptr));
    } else {
        // SAFETY: allocated in `allocate` with this size and alignment.
        unsafe { alloc::dealloc(ptr.as_ptr(), Layout::from_size_align_unchecked(size, ALIGN)) };
    }
}

/// Bytes held by live arrays (not counting the cache).
pub fn active_memory() -> usize {
    pool().active
}

/// The highest [`active_memory`] since the start or the last [`reset_peak_memory`].
pub fn peak_memory() -> usize {
    pool().peak
}

/// Sets the peak to the current active memory.
pub fn reset_peak_memory() {
    let mut p = pool();
    p.peak = p.active;
}

/// Bytes of freed buffers kept for reuse.
pub fn cache_memory() -> usize {
    pool().cached
}

/// The memory limit in bytes (default: the machine's physical memory).
pub fn memory_limit() -> usize {
    pool().limit()
}

/// Sets the limit on active memory and returns the previous one. Allocations past it fail
/// with [`Error::OutOfMemory`].
pub fn set_memory_limit(bytes: usize) -> usize {
    let mut p = pool();
    let old = p.limit();
    p.memory_limit = bytes.max(1);
    old
}

/// Sets the limit on cached memory and returns the previous one; 0 disables the cache.
pub fn set_cache_limit(bytes: usize) -> usize {
    let mut p = pool();
    let old = p.cache_limit;
    p.cache_limit = bytes;
    p.trim_cache_to(bytes);
    old
}

/// Frees every cached buffer.
pub fn clear_cache() {
    pool().release_cache();
}

/// Memory that a device backend owns (a GPU allocation); the CUDA backend implements it.
pub trait DeviceMemory: Send + Sync {
    /// The device the memory is on.
    fn device(&self) -> Device;
    /// Copies the contents to host memory.
    fn copy_to_host(&self, dst: &mut [u8]) -> Result<()>;
}

enum HostStorage {
    /// An allocation from the pool (pointer, block size).
    Owned(NonNull<u8>, usize),
    /// Bytes inside a memory-mapped file.
    Mapped(Arc<memmap2::Mmap>, usize),
    /// A zero-byte buffer.
    Empty,
}

/// A block of bytes that arrays view. Holds a host copy and, with a GPU backend, a device copy.
pub struct Buffer {
    nbytes: usize,
    host: HostStorage,
    device: Mutex<Option<Arc<dyn DeviceMemory>>>,
}

// SAFETY: the host memory is owned by the buffer (or by an immutable mmap) and only written
// before the buffer is shared.
unsafe impl Send for Buffer {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// An uninitialized host buffer of `nbytes`, from the pool.
    pub fn alloc(nbytes: usize) -> Result<Buffer> {
        let host = if nbytes == 0 {
            HostStorage::Empty
        } else {
            let (ptr, size) = allocate(nbytes)?;
            HostStorage::Owned(ptr, size)
        };
        Ok(Buffer { nbytes, host, device: Mutex::new(None) })
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
        Buffer { nbytes: len, host: HostStorage::Mapped(map, offset), device: Mutex::new(None) }
    }

    /// Size in bytes.
    pub fn nbytes(&self) -> usize {
        self.nbytes
    }

    /// Pointer to the host bytes.
    pub fn host_ptr(&self) -> *const u8 {
        match &self.host {
            HostStorage::Owned(p, _) => p.as_ptr(),
            HostStorage::Mapped(m, off) => m[*off..].as_ptr(),
            HostStorage::Empty => NonNull::<u64>::dangling().as_ptr() as *const u8,
        }
    }

    /// The host bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: host_ptr points at nbytes initialized bytes.
        unsafe { std::slice::from_raw_parts(self.host_ptr(), self.nbytes) }
    }

    /// The host bytes, writable: only while the buffer is not yet shared.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        assert!(!matches!(self.host, HostStorage::Mapped(..)), "a mapped buffer is read-only");
        // SAFETY: we hold the only reference and own the allocation.
        unsafe { std::slice::from_raw_parts_mut(self.host_ptr() as *mut u8, self.nbytes) }
    }

    /// The device copy, if a backend attached one.
    pub fn device_memory(&self) -> Option<Arc<dyn DeviceMemory>> {
        self.device.lock().unwrap().clone()
    }

    /// Attaches a device copy of the same bytes.
    pub fn set_device_memory(&self, mem: Arc<dyn DeviceMemory>) {
        *self.device.lock().unwrap() = Some(mem);
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let HostStorage::Owned(p, size) = self.host {
            free(p, size);
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.nbytes)
    }
}
