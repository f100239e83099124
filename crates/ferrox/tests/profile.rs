//! The per-op profiler counts each evaluated op under its kind (its own process: the
//! recording is global).

use ferrox::{self as fx, profile, Array};

#[test]
fn records_each_evaluated_op_by_kind() {
    profile::set_enabled(true);
    let a = Array::from_slice(&[1f32, 2.0, 3.0], &[3]).unwrap();
    let b = fx::exp(&fx::add(&a, &a).unwrap()).unwrap();
    let c = fx::transpose(&fx::reshape(&b, &[1, 3]).unwrap(), &[1, 0]).unwrap();
    c.eval().unwrap();
    fx::negative(&c).unwrap().eval().unwrap();
    profile::set_enabled(false);
    let rows = profile::report(true);
    let count = |name: &str| rows.iter().find(|r| r.op == name).map(|r| r.count);
    assert_eq!(count("Binary(Add) float32"), Some(1), "{rows:?}");
    assert_eq!(count("Unary(Exp) float32"), Some(1), "{rows:?}");
    assert_eq!(count("Transpose float32"), Some(1), "{rows:?}");
    // The host steps around the ops: each eval's graph walk, and the time between the two.
    assert_eq!(count("(eval: graph walk)"), Some(2), "{rows:?}");
    assert_eq!(count("(between evals: graph building, reads, sampling)"), Some(1), "{rows:?}");
    assert!(profile::format_report(&rows).contains("Unary(Exp) float32"));
    assert!(profile::report(false).is_empty(), "report(true) clears the table");
}
