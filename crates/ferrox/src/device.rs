//! Devices and streams: where an op runs.
//!
//! An array has no home device; every op records the stream it was built on, and runs on that
//! stream's device when evaluated. The default stream is on the default device: the GPU when one
//! is present (with the `cuda` feature), else the CPU; `FERROX_DEVICE=cpu|gpu` overrides it.
//! Rust has no keyword arguments, so where MLX takes `stream=` on each op, ferrox scopes it:
//! [`with_stream`] runs a closure with a stream as the default for the ops it builds.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use crate::error::{Error, Result};

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The host CPU (all cores).
    Cpu,
    /// The GPU with this index.
    Gpu(usize),
}

impl Device {
    /// True if this device can be used in this process.
    pub fn is_available(self) -> bool {
        match self {
            Device::Cpu => true,
            #[cfg(feature = "cuda")]
            Device::Gpu(i) => i < crate::backend::cuda::device_count(),
            #[cfg(not(feature = "cuda"))]
            Device::Gpu(_) => false,
        }
    }
}

/// An ordered queue of work on one device. Ops on one stream run in the order they were built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stream {
    /// The device the stream's work runs on.
    pub device: Device,
    /// The stream's number on that device.
    pub index: usize,
}

impl Stream {
    /// A new stream on `device`, distinct from every other stream.
    pub fn new(device: Device) -> Result<Stream> {
        check_available(device)?;
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        Ok(Stream { device, index: NEXT.fetch_add(1, Ordering::Relaxed) })
    }
}

fn check_available(device: Device) -> Result<()> {
    if device.is_available() {
        Ok(())
    } else {
        Err(Error::Device(format!(
            "{device:?} is not available (ferrox was built without GPU support or no GPU was found)"
        )))
    }
}

static DEFAULT_DEVICE: RwLock<Option<Device>> = RwLock::new(None);

thread_local! {
    static SCOPED: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

fn initial_device() -> Device {
    match std::env::var("FERROX_DEVICE").ok().as_deref() {
        Some("cpu") => Device::Cpu,
        Some("gpu") if Device::Gpu(0).is_available() => Device::Gpu(0),
        _ if Device::Gpu(0).is_available() => Device::Gpu(0),
        _ => Device::Cpu,
    }
}

/// The device new ops run on when no stream is in scope.
pub fn default_device() -> Device {
    if let Some(d) = *DEFAULT_DEVICE.read().unwrap() {
        return d;
    }
    let d = initial_device();
    *DEFAULT_DEVICE.write().unwrap() = Some(d);
    d
}

/// Makes `device` the default for new ops (all threads).
pub fn set_default_device(device: Device) -> Result<()> {
    check_available(device)?;
    *DEFAULT_DEVICE.write().unwrap() = Some(device);
    Ok(())
}

/// The default stream of `device`.
pub fn default_stream(device: Device) -> Stream {
    Stream { device, index: 0 }
}

/// The stream a new op is recorded on: the innermost [`with_stream`] scope, else the default
/// stream of the default device.
pub fn current_stream() -> Stream {
    SCOPED.with(|s| s.borrow().last().copied()).unwrap_or_else(|| default_stream(default_device()))
}

/// Runs `f` with `stream` as the stream of every op it builds (on this thread).
pub fn with_stream<R>(stream: Stream, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            SCOPED.with(|s| s.borrow_mut().pop());
        }
    }
    SCOPED.with(|s| s.borrow_mut().push(stream));
    let _pop = Pop;
    f()
}

/// Runs `f` with the default stream of `device` in scope (see [`with_stream`]).
pub fn with_device<R>(device: Device, f: impl FnOnce() -> R) -> Result<R> {
    check_available(device)?;
    Ok(with_stream(default_stream(device), f))
}
