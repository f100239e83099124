//! Memory accounting and limits. The counters are process-wide, so this binary holds one test
//! and nothing else allocates while it runs.

use ferrox::{self as fx, Dtype, Error};

#[test]
fn memory_accounting_and_limits() {
    fx::clear_cache();
    let base = fx::active_memory();
    let a = fx::zeros(&[1024, 1024], Dtype::F32).unwrap();
    a.eval().unwrap();
    assert!(fx::active_memory() >= base + (4 << 20));
    assert!(fx::peak_memory() >= fx::active_memory());
    drop(a);
    assert!(fx::cache_memory() >= 4 << 20, "freed buffer parked in the cache");
    fx::clear_cache();
    assert_eq!(fx::cache_memory(), 0);

    // A limit is a clear error, not an abort.
    let old = fx::set_memory_limit(fx::active_memory() + (1 << 20));
    let big = fx::zeros(&[4096, 4096], Dtype::F32).unwrap();
    let err = big.eval().unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    fx::set_memory_limit(old);
    assert!(big.eval().is_ok());
    drop(big);

    // A loop of evaluated steps holds constant memory: graphs are detached.
    let mut x = fx::zeros(&[256, 256], Dtype::F32).unwrap();
    x.eval().unwrap();
    let steady = fx::active_memory();
    for _ in 0..2000 {
        x = fx::add(fx::multiply(&x, 0.5).unwrap(), 1.0).unwrap();
        x.eval().unwrap();
    }
    assert!(fx::active_memory() <= steady + (256 * 256 * 4), "memory grew across steps");
    assert!((x.to_vec::<f32>().unwrap()[0] - 2.0).abs() < 1e-6);

    fx::set_cache_limit(0);
    assert_eq!(fx::cache_memory(), 0);
    fx::set_cache_limit(usize::MAX);
}
