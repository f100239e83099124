//! Array semantics: laziness, graph detaching, views, devices and streams, memory accounting
//! and limits, errors as values, async evaluation.

use ferrox::{self as fx, Array, Device, Dtype, Error};

#[test]
fn lazy_until_evaluated_and_graph_dropped_after() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    let b = fx::multiply(fx::add(&a, 1.0).unwrap(), 2.0).unwrap();
    assert!(!b.is_evaluated());
    fx::eval(&[&b]).unwrap();
    assert!(b.is_evaluated());
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![4.0, 6.0, 8.0]);
    // The intermediate add is held only by b's graph: after eval nothing else references it.
    let weak_probe = fx::add(&a, 1.0).unwrap();
    let c = fx::multiply(&weak_probe, 2.0).unwrap();
    drop(weak_probe);
    c.eval().unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![4.0, 6.0, 8.0]);
}

#[test]
fn views_share_the_buffer() {
    let a = fx::reshape(&fx::arange(0.0, 12.0, 1.0, Dtype::F32).unwrap(), &[3, 4]).unwrap();
    a.eval().unwrap();
    let t = a.t();
    let s = fx::slice(&a, &[0, 3], &[3, -5], &[2, -2]).unwrap();
    let bc = fx::broadcast_to(&fx::slice_axis(&a, 0, 0, 1).unwrap(), &[5, 4]).unwrap();
    let e = fx::expand_dims(&t, &[0]).unwrap();
    for v in [&t, &s, &bc, &e] {
        assert!(std::sync::Arc::ptr_eq(&v.data().unwrap().buffer, &a.data().unwrap().buffer));
    }
    assert_eq!(s.to_vec::<f32>().unwrap(), vec![3.0, 1.0, 11.0, 9.0]);
    assert_eq!(t.data().unwrap().strides, vec![1, 4]);
}

#[test]
fn errors_name_the_op_and_shapes() {
    let a = fx::zeros(&[2, 3], Dtype::F32).unwrap();
    let b = fx::zeros(&[4], Dtype::F32).unwrap();
    let e = fx::add(&a, &b).unwrap_err().to_string();
    assert!(e.contains("add") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    let e = fx::matmul(&a, &a).unwrap_err().to_string();
    assert!(e.contains("matmul") && e.contains("[2, 3]"), "{e}");
    let e = fx::sum(&a, Some(&[2]), false).unwrap_err().to_string();
    assert!(e.contains("sum") && e.contains("axis 2"), "{e}");
    let e = fx::bitwise_and(&a, &a).unwrap_err().to_string();
    assert!(e.contains("float32"), "{e}");
    assert!(fx::reshape(&a, &[4, -1]).is_err());
    // Out-of-range indices are an error at evaluation, not a panic.
    let idx = Array::from_slice(&[5i32], &[1]).unwrap();
    let t = fx::take(&b, &idx, None).unwrap();
    assert!(t.eval().is_err());
    assert!(fx::zeros(&[1], Dtype::F32).unwrap().item::<f32>().is_ok());
    assert!(a.item::<f32>().is_err());
}

#[test]
fn devices_and_streams() {
    assert_eq!(fx::default_device(), Device::Cpu);
    let s = fx::Stream::new(Device::Cpu).unwrap();
    let r = fx::with_stream(s, || fx::add(Array::scalar(1i32), 2).unwrap());
    assert_eq!(r.item::<i32>().unwrap(), 3);
    // No GPU in a CPU build: a clear error, never a panic.
    assert!(matches!(fx::Stream::new(Device::Gpu(0)), Err(Error::Device(_))));
    assert!(fx::set_default_device(Device::Gpu(0)).is_err());
}

#[test]
fn async_eval_then_eval() {
    let a = fx::ones(&[256, 256], Dtype::F32).unwrap();
    let b = fx::matmul(&a, &a).unwrap();
    fx::async_eval(&[&b]);
    assert_eq!(fx::sum(&b, None, false).unwrap().item::<f32>().unwrap(), 256.0 * 256.0 * 256.0);
}

#[test]
fn long_lazy_chain_drops_without_overflow() {
    let mut x = Array::scalar(0.0f32);
    for _ in 0..200_000 {
        x = fx::add(&x, 1.0).unwrap();
    }
    drop(x);
}
