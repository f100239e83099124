//! Kernels from `.cu` source: compiled by NVRTC for the device's architecture the first time
//! they are needed, cached on disk, loaded once per process.
//!
//! A module's source is `common.cuh`, a few `#define`s and one family's `.cu` file (with the
//! instantiations for one dtype). Its cubin is cached under `$FERROX_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/ferrox/kernels`, else `~/.cache/ferrox/kernels`, named by a hash of the
//! source, the architecture and the driver version, so a change to any of them compiles anew.
//! A cache that cannot be written is skipped silently: it only saves time.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule};
use cudarc::nvrtc::{result as nv, sys as nvsys, Ptx};

use crate::error::{Error, Result};

use super::context::{cuda_err, Gpu};

/// The shared header of every kernel source.
pub(crate) const COMMON: &str = include_str!("kernels/common.cuh");

/// 64-bit FNV-1a: a hash that stays the same across builds and Rust versions (a disk key).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FERROX_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("ferrox").join("kernels"))
}

/// Compiles `src` to a cubin for `arch` with NVRTC.
fn nvrtc_compile(src: &str, arch: &str) -> Result<Vec<u8>> {
    let csrc = CString::new(src).map_err(|_| Error::Device("kernel source holds a NUL byte".into()))?;
    let prog = nv::create_program(&csrc, None).map_err(|e| cuda_err("creating an NVRTC program", e))?;
    let opts = [format!("--gpu-architecture={arch}"), "--std=c++17".to_string(), "-default-device".to_string()];
    // SAFETY: prog is live until destroyed below; the sizes come from NVRTC.
    unsafe {
        let compiled = nv::compile_program(prog, &opts);
        if let Err(e) = compiled {
            let log = nv::get_program_log(prog).map(|l| {
                let bytes: Vec<u8> = l.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            });
            let _ = nv::destroy_program(prog);
            return Err(Error::Device(format!(
                "NVRTC could not compile a kernel for {arch}: {e:?}\n{}",
                log.unwrap_or_default()
            )));
        }
        let mut size = 0usize;
        nvsys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| cuda_err("reading the cubin size", e))?;
        let mut cubin = vec![0u8; size];
        nvsys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut std::ffi::c_char)
            .result()
            .map_err(|e| cuda_err("reading the cubin", e))?;
        let _ = nv::destroy_program(prog);
        Ok(cubin)
    }
}

impl Gpu {
    /// The module compiled from `src` (from the disk cache, or NVRTC).
    fn load(&self, src: &str) -> Result<Arc<CudaModule>> {
        let key = fnv1a(&[src.as_bytes(), self.arch.as_bytes(), &self.driver.to_le_bytes()]);
        let path = cache_dir().map(|d| d.join(format!("{key:016x}.cubin")));
        let cached = path.as_ref().and_then(|p| std::fs::read(p).ok());
        let cubin = match cached {
            Some(c) => c,
            None => {
                let c = nvrtc_compile(src, &self.arch)?;
                if let Some(p) = &path {
                    // Write then rename, so a reader never sees half a file.
                    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
                    let _ = std::fs::create_dir_all(p.parent().unwrap())
                        .and_then(|_| std::fs::write(&tmp, &c))
                        .and_then(|_| std::fs::rename(&tmp, p));
                }
                c
            }
        };
        self.ctx.load_module(Ptx::from_binary(cubin)).map_err(|e| cuda_err("loading a kernel module", e))
    }

    /// Function `name` of the module known as `module` (e.g. "elementwise f32"), whose source
    /// `src` makes on the first request.
    pub(crate) fn function(&self, module: &str, name: &str, src: impl FnOnce() -> String) -> Result<CudaFunction> {
        // The key "module\0name", built in a reused buffer: a hit allocates nothing.
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let hit = KEY.with(|k| {
            let mut k = k.borrow_mut();
            k.clear();
            k.push_str(module);
            k.push('\0');
            k.push_str(name);
            self.functions.lock().unwrap_or_else(|e| e.into_inner()).get(k.as_str()).cloned()
        });
        if let Some(f) = hit {
            return Ok(f);
        }
        let key = format!("{module}\0{name}");
        let m = {
            let mut mods = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match mods.get(module) {
                Some(m) => m.clone(),
                None => {
                    let m = self.load(&src())?;
                    mods.insert(module.to_string(), m.clone());
                    m
                }
            }
        };
        let f = m.load_function(name).map_err(|e| cuda_err(&format!("finding kernel {name} in {module}"), e))?;
        self.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, f.clone());
        Ok(f)
    }
}
