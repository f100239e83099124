//! slice_update writes into its input's buffer when nothing else can see that buffer (a KV
//! cache updated token by token), and into a copy otherwise. Its own binary: the memory
//! counters are process-wide.

use ferrox::{self as fx, Array, Dtype};

const N: usize = 1 << 20; // 4 MB of f32

fn write_one(a: &Array, i: usize, v: f32) -> Array {
    let one = Array::from_slice(&[v], &[1]).unwrap();
    fx::slice_update(a, &one, &[i as isize], &[i as isize + 1], &[1]).unwrap()
}

#[test]
fn uniquely_held_buffers_are_written_in_place_and_shared_ones_are_not() {
    // Token by token: each update replaces the only handle on the buffer.
    let mut a = fx::zeros(&[N], Dtype::F32).unwrap();
    a.eval().unwrap();
    fx::reset_peak_memory();
    let base = fx::active_memory();
    for i in 0..64 {
        a = write_one(&a, i * 1000, i as f32 + 1.0);
        a.eval().unwrap();
    }
    // A copy per update would hold two 4 MB buffers at once.
    assert!(fx::peak_memory() < base + N * 4 / 2, "peak {} over base {base}", fx::peak_memory());
    let v = a.to_vec::<f32>().unwrap();
    for i in 0..64 {
        assert_eq!(v[i * 1000], i as f32 + 1.0);
    }
    assert_eq!(v.iter().filter(|&&x| x != 0.0).count(), 64);

    // Another handle on the old array, or a view of its buffer: the update must copy.
    let kept = a.clone();
    let b = write_one(&a, 7, -1.0);
    b.eval().unwrap();
    assert_eq!(kept.to_vec::<f32>().unwrap()[7], 0.0);
    assert_eq!(b.to_vec::<f32>().unwrap()[7], -1.0);
    drop(kept);
    let view = fx::slice_axis(&b, 0, 0, 10).unwrap();
    view.eval().unwrap();
    let c = write_one(&b, 3, 5.0);
    drop(b);
    c.eval().unwrap();
    assert_eq!(view.to_vec::<f32>().unwrap()[3], 0.0);
    assert_eq!(c.to_vec::<f32>().unwrap()[3], 5.0);
}
