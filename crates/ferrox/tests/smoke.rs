use ferrox::{self as fx, Array, Dtype};

#[test]
fn smoke() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let b = fx::matmul(&a, &a.t()).unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![5.0, 11.0, 11.0, 25.0]);
    let s = fx::sum(&a, Some(&[0]), false).unwrap();
    assert_eq!(s.to_vec::<f32>().unwrap(), vec![4.0, 6.0]);
    let c = fx::add(&a, 1).unwrap();
    println!("{c}");
    let e = fx::exp(&fx::arange(0.0, 5.0, 1.0, Dtype::I32).unwrap()).unwrap();
    println!("{e}");
    let big = fx::ones(&[1000, 1000], Dtype::F32).unwrap();
    let t = fx::sum(&fx::multiply(&big, big.t()).unwrap(), None, false).unwrap();
    assert_eq!(t.item::<f32>().unwrap(), 1e6);
    println!("{}", fx::tril(&fx::ones(&[3, 3], Dtype::I32).unwrap(), 0).unwrap());
}
