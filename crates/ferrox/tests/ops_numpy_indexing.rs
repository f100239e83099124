//! Indexing, sorting, fused (`fast`) and einsum ops against NumPy float64 references
//! (scripts/make_indexing_fast_fixtures.py, whose formulas for rope, the norms and attention
//! are cross-checked there against MLX), in every dtype the op takes, on row-major, transposed,
//! strided-slice and broadcast inputs, with empty arrays and scalars; plus the errors that bad
//! arguments give.
//!
//! The cases are table-driven: each fixture case names its op, inputs, parameters and expected
//! outputs, and a failure names the case. Each test runs one group of ops and reports every
//! failing case of the group at once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use ferrox::fast::{self, SdpaMask};
use ferrox::primitives::ScatterMode;
use ferrox::{self as fx, Array, Dtype};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/indexing_fast.json");

struct Fixture {
    tensors: Vec<Value>,
    cases: Vec<Value>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let v: Value = serde_json::from_str(FIXTURE).expect("fixture parses");
        Fixture { tensors: v["tensors"].as_array().unwrap().clone(), cases: v["cases"].as_array().unwrap().clone() }
    })
}

// ---------------------------------------------------------------------------------------------
// reading the fixture

/// A number of the fixture; non-finite values are written as strings.
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => match s.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => panic!("bad number {other:?} in the fixture"),
        },
        other => panic!("bad number {other} in the fixture"),
    }
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn isizes(v: &Value) -> Vec<isize> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as isize).collect()
}

fn opt_axis(v: &Value) -> Option<isize> {
    v.as_i64().map(|x| x as isize)
}

fn dtype_of(v: &Value) -> Dtype {
    let name = v.as_str().unwrap();
    Dtype::from_name(name).unwrap_or_else(|| panic!("unknown dtype {name}"))
}

/// Row-major strides of `shape` (in elements).
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

/// The multi-index of row-major position `pos` in `shape`.
fn unravel(mut pos: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for i in (0..shape.len()).rev() {
        if shape[i] > 0 {
            idx[i] = pos % shape[i];
            pos /= shape[i];
        }
    }
    idx
}

/// A row-major array of `values` in `dtype`. Half-precision values (exactly representable, by
/// the script's construction) go through float32.
fn make(values: &[f64], shape: &[usize], dtype: Dtype) -> Array {
    match dtype {
        Dtype::Bool => Array::from_slice(&values.iter().map(|&v| v != 0.0).collect::<Vec<_>>(), shape),
        Dtype::I32 => Array::from_slice(&values.iter().map(|&v| v as i32).collect::<Vec<_>>(), shape),
        Dtype::I64 => Array::from_slice(&values.iter().map(|&v| v as i64).collect::<Vec<_>>(), shape),
        Dtype::U32 => Array::from_slice(&values.iter().map(|&v| v as u32).collect::<Vec<_>>(), shape),
        Dtype::F64 => Array::from_slice(values, shape),
        Dtype::F32 => Array::from_slice(&values.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape),
        Dtype::F16 | Dtype::Bf16 => {
            let f = Array::from_slice(&values.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape).unwrap();
            fx::astype(&f, dtype)
        }
        other => panic!("no builder for {other}"),
    }
    .unwrap()
}

/// The logical (row-major) values and shape of a fixture tensor.
fn logical(t: &Value) -> (Vec<f64>, Vec<usize>) {
    let shape = usizes(&t["shape"]);
    let data = nums(&t["data"]);
    if t["layout"] == "broadcast" {
        let stored = usizes(&t["stored"]);
        let sst = strides(&stored);
        let n: usize = shape.iter().product();
        let vals = (0..n)
            .map(|p| {
                let idx = unravel(p, &shape);
                let off: usize =
                    idx.iter().zip(&stored).zip(&sst).map(|((&i, &s), &st)| if s == 1 { 0 } else { i * st }).sum();
                data[off]
            })
            .collect();
        return (vals, shape);
    }
    (data, shape)
}

/// Builds a fixture tensor with its layout: the same logical values, stored row-major, or
/// with the axes reversed and viewed through a transpose, or with a doubled last axis viewed
/// with step 2, or broadcast from a smaller array.
fn build(t: &Value) -> Array {
    let dtype = dtype_of(&t["dtype"]);
    let shape = usizes(&t["shape"]);
    let data = nums(&t["data"]);
    let nd = shape.len();
    match t["layout"].as_str().unwrap() {
        "contig" => make(&data, &shape, dtype),
        "transpose" => {
            let rev: Vec<usize> = shape.iter().rev().copied().collect();
            let st = strides(&shape);
            let n: usize = shape.iter().product();
            let stored: Vec<f64> = (0..n)
                .map(|p| {
                    let idx = unravel(p, &rev);
                    data[idx.iter().rev().zip(&st).map(|(&i, &s)| i * s).sum::<usize>()]
                })
                .collect();
            let base = make(&stored, &rev, dtype);
            let perm: Vec<usize> = (0..nd).rev().collect();
            let view = fx::transpose(&base, &perm).unwrap();
            assert_eq!(view.shape(), &shape[..]);
            view
        }
        "slice" => {
            let last = shape[nd - 1];
            let mut wide = shape.clone();
            wide[nd - 1] = 2 * last;
            let junk = if dtype == Dtype::Bool { 1.0 } else { 77.0 };
            let mut stored = vec![junk; data.len() * 2];
            for (i, &v) in data.iter().enumerate() {
                stored[(i / last) * 2 * last + 2 * (i % last)] = v;
            }
            let base = make(&stored, &wide, dtype);
            let mut stop: Vec<isize> = wide.iter().map(|&x| x as isize).collect();
            stop[nd - 1] = (2 * last) as isize;
            let mut step = vec![1isize; nd];
            step[nd - 1] = 2;
            let view = fx::slice(&base, &vec![0; nd], &stop, &step).unwrap();
            assert_eq!(view.shape(), &shape[..]);
            view
        }
        "broadcast" => {
            let stored = usizes(&t["stored"]);
            fx::broadcast_to(&make(&data, &stored, dtype), &shape).unwrap()
        }
        other => panic!("unknown layout {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// running a case

/// One case: its inputs (built), parameters and the fixture entry.
struct Case<'a> {
    v: &'a Value,
    fx: &'a Fixture,
}

impl Case<'_> {
    fn name(&self) -> &str {
        self.v["name"].as_str().unwrap()
    }
    fn op(&self) -> &str {
        self.v["op"].as_str().unwrap()
    }
    fn p(&self, key: &str) -> &Value {
        &self.v["params"][key]
    }
    fn tensor(&self, name: &str) -> Option<&Value> {
        self.v["inputs"].get(name).map(|id| &self.fx.tensors[id.as_u64().unwrap() as usize])
    }
    fn input(&self, name: &str) -> Option<Array> {
        self.tensor(name).map(build)
    }
    fn req(&self, name: &str) -> Array {
        self.input(name).unwrap_or_else(|| panic!("case {} lacks input {name}", self.name()))
    }
    /// Inputs `{prefix}0`, `{prefix}1`, ... in order.
    fn numbered(&self, prefix: &str) -> Vec<Array> {
        (0..).map_while(|i| self.input(&format!("{prefix}{i}"))).collect()
    }
}

fn axes_param(v: &Value) -> Option<Vec<isize>> {
    if v.is_null() {
        None
    } else {
        Some(isizes(v))
    }
}

/// Runs the op of a case and returns its outputs.
fn run(c: &Case) -> fx::Result<Vec<Array>> {
    let one = |a: fx::Result<Array>| a.map(|a| vec![a]);
    match c.op() {
        "take" => one(fx::take(&c.req("a"), &c.req("idx"), opt_axis(c.p("axis")))),
        "gather" => one(fx::gather(&c.req("a"), &c.numbered("i"), &isizes(c.p("axes")), &usizes(c.p("slice_sizes")))),
        op @ ("scatter" | "scatter_add" | "scatter_prod" | "scatter_max" | "scatter_min") => {
            let f = match op {
                "scatter" => fx::scatter,
                "scatter_add" => fx::scatter_add,
                "scatter_prod" => fx::scatter_prod,
                "scatter_max" => fx::scatter_max,
                _ => fx::scatter_min,
            };
            one(f(&c.req("a"), &c.numbered("i"), &c.req("updates"), &isizes(c.p("axes"))))
        }
        "take_along_axis" => one(fx::take_along_axis(&c.req("a"), &c.req("idx"), opt_axis(c.p("axis")))),
        "put_along_axis" => {
            one(fx::put_along_axis(&c.req("a"), &c.req("idx"), &c.req("values"), opt_axis(c.p("axis"))))
        }
        "scatter_add_along_axis" => one(fx::scatter_along_axis(
            &c.req("a"),
            &c.req("idx"),
            &c.req("values"),
            opt_axis(c.p("axis")),
            ScatterMode::Add,
        )),
        "roll" => one(fx::roll(&c.req("a"), c.p("shift").as_i64().unwrap() as isize, opt_axis(c.p("axis")))),
        "diagonal" | "trace" => {
            let (o, a1, a2) =
                (c.p("offset").as_i64().unwrap(), c.p("axis1").as_i64().unwrap(), c.p("axis2").as_i64().unwrap());
            if c.op() == "diagonal" {
                one(fx::diagonal(&c.req("a"), o as isize, a1 as isize, a2 as isize))
            } else {
                one(fx::trace(&c.req("a"), o as isize, a1 as isize, a2 as isize, None))
            }
        }
        "meshgrid" => {
            fx::meshgrid(&c.numbered("x"), c.p("sparse").as_bool().unwrap(), c.p("indexing").as_str().unwrap())
        }
        "sort" => one(fx::sort(&c.req("a"), opt_axis(c.p("axis")))),
        "argsort" => one(fx::argsort(&c.req("a"), opt_axis(c.p("axis")))),
        "partition" => one(fx::partition(&c.req("a"), c.p("kth").as_u64().unwrap() as usize, opt_axis(c.p("axis")))),
        "argpartition" => {
            one(fx::argpartition(&c.req("a"), c.p("kth").as_u64().unwrap() as usize, opt_axis(c.p("axis"))))
        }
        "topk" => one(fx::topk(&c.req("a"), c.p("k").as_u64().unwrap() as usize, opt_axis(c.p("axis")))),
        "softmax" => {
            let axes = axes_param(c.p("axes"));
            one(fx::softmax(&c.req("a"), axes.as_deref(), c.p("precise").as_bool().unwrap()))
        }
        "logsumexp" => {
            let axes = axes_param(c.p("axes"));
            one(fx::logsumexp(&c.req("a"), axes.as_deref(), c.p("keepdims").as_bool().unwrap()))
        }
        "rms_norm" => one(fast::rms_norm(&c.req("x"), c.input("weight").as_ref(), c.p("eps").as_f64().unwrap() as f32)),
        "layer_norm" => one(fast::layer_norm(
            &c.req("x"),
            c.input("weight").as_ref(),
            c.input("bias").as_ref(),
            c.p("eps").as_f64().unwrap() as f32,
        )),
        "rope" => one(fast::rope(
            &c.req("x"),
            c.p("dims").as_u64().unwrap() as usize,
            c.p("traditional").as_bool().unwrap(),
            c.p("base").as_f64().map(|b| b as f32),
            c.p("scale").as_f64().unwrap() as f32,
            c.p("offset").as_i64().unwrap(),
            c.input("freqs").as_ref(),
        )),
        "sdpa" => {
            let mask = match c.p("mask").as_str() {
                None => SdpaMask::None,
                Some("causal") => SdpaMask::Causal,
                Some(_) => SdpaMask::Array(c.req("mask")),
            };
            let scale = c.p("scale").as_f64().unwrap() as f32;
            one(fast::scaled_dot_product_attention(&c.req("q"), &c.req("k"), &c.req("v"), scale, mask))
        }
        "einsum" => one(fx::einsum(c.p("spec").as_str().unwrap(), &c.numbered("x"))),
        other => panic!("no runner for op {other}"),
    }
}

/// (relative, absolute) tolerance for a case's dtype; integer results must match exactly.
fn tolerance(dtype: Dtype) -> (f64, f64) {
    match dtype {
        Dtype::F32 => (1e-5, 1e-6),
        Dtype::F16 | Dtype::Bf16 => (1e-2, 1e-2),
        Dtype::F64 => (1e-11, 1e-12),
        _ => (0.0, 0.0),
    }
}

fn close(got: f64, want: f64, (rtol, atol): (f64, f64)) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= atol + rtol * want.abs()
}

/// The lines of `data` (row-major `shape`) along `axis`.
fn lines(data: &[f64], shape: &[usize], axis: usize) -> Vec<Vec<f64>> {
    let outer: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            out.push((0..n).map(|j| data[(o * n + j) * inner + i]).collect());
        }
    }
    out
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// The partition property of `got` (values, or indices into `input` for argpartition) around
/// `kth`, whose value a full sort would be `kth_vals` (one per line).
fn check_partition(c: &Case, got: &Array, kth_vals: &[f64]) -> Result<(), String> {
    let (input, mut shape) = logical(c.tensor("a").unwrap());
    let axis = match opt_axis(c.p("axis")) {
        Some(a) => (a.rem_euclid(shape.len() as isize)) as usize,
        None => {
            shape = vec![input.len()];
            0
        }
    };
    if got.shape() != &shape[..] {
        return Err(format!("shape {:?}, want {shape:?}", got.shape()));
    }
    let k = c.p("kth").as_u64().unwrap() as usize;
    let out = got.to_vec::<f64>().map_err(|e| e.to_string())?;
    let in_lines = lines(&input, &shape, axis);
    let out_lines = lines(&out, &shape, axis);
    for (li, (inp, o)) in in_lines.iter().zip(&out_lines).enumerate() {
        let vals: Vec<f64> = if c.op() == "argpartition" {
            let mut seen = vec![false; inp.len()];
            for &i in o {
                let i = i as usize;
                if i >= inp.len() || seen[i] {
                    return Err(format!("line {li}: indices {o:?} are not a permutation"));
                }
                seen[i] = true;
            }
            o.iter().map(|&i| inp[i as usize]).collect()
        } else {
            o.clone()
        };
        let pivot = kth_vals[li];
        if vals[k] != pivot {
            return Err(format!("line {li}: element {k} is {} but a sort puts {pivot} there ({vals:?})", vals[k]));
        }
        if vals[..k].iter().any(|&v| v > pivot) || vals[k + 1..].iter().any(|&v| v < pivot) {
            return Err(format!("line {li}: {vals:?} is not partitioned around element {k}"));
        }
        if sorted(vals.clone()) != sorted(inp.clone()) {
            return Err(format!("line {li}: {vals:?} is not a reordering of {inp:?}"));
        }
    }
    Ok(())
}

/// Compares the outputs of a case with its expected tensors.
fn check(c: &Case, outs: &[Array]) -> Result<(), String> {
    let expected = c.v["expected"].as_array().unwrap();
    if outs.len() != expected.len() {
        return Err(format!("{} outputs, want {}", outs.len(), expected.len()));
    }
    let tol = tolerance(dtype_of(&c.v["dtype"]));
    let how = c.v["check"].as_str().unwrap();
    for (i, (got, want)) in outs.iter().zip(expected).enumerate() {
        let wshape = usizes(&want["shape"]);
        let wdata = nums(&want["data"]);
        if how == "partition" {
            return check_partition(c, got, &wdata);
        }
        if got.shape() != &wshape[..] {
            return Err(format!("output {i}: shape {:?}, want {wshape:?}", got.shape()));
        }
        let wdtype = dtype_of(&want["dtype"]);
        if got.dtype() != wdtype {
            return Err(format!("output {i}: dtype {}, want {wdtype}", got.dtype()));
        }
        let mut g = got.to_vec::<f64>().map_err(|e| format!("output {i}: evaluation failed: {e}"))?;
        if how == "sorted_along_axis" {
            // topk: the order within the k is unspecified; compare sorted lines.
            let axis = opt_axis(c.p("axis")).map_or(0, |a| a.rem_euclid(wshape.len() as isize) as usize);
            let mut gl = lines(&g, &wshape, axis);
            gl.iter_mut().for_each(|l| *l = sorted(l.clone()));
            let wl = lines(&wdata, &wshape, axis);
            if gl != wl {
                return Err(format!("output {i}: sorted lines {gl:?}, want {wl:?}"));
            }
            continue;
        }
        let exact = how == "exact" || !wdtype.is_float();
        for (j, (gv, wv)) in g.drain(..).zip(&wdata).enumerate() {
            let ok = if exact { gv == *wv } else { close(gv, *wv, tol) };
            if !ok {
                return Err(format!("output {i}: element {j} (at {:?}) is {gv}, want {wv}", unravel(j, &wshape)));
            }
        }
    }
    Ok(())
}

/// Runs every fixture case of `ops`, and fails with a list of the cases that fail.
fn run_group(ops: &[&str]) {
    let f = fixture();
    let mut failures = Vec::new();
    let mut count = 0;
    for v in &f.cases {
        let c = Case { v, fx: f };
        if !ops.contains(&c.op()) {
            continue;
        }
        count += 1;
        let r = catch_unwind(AssertUnwindSafe(|| match run(&c) {
            Ok(outs) => check(&c, &outs),
            Err(e) => Err(format!("error: {e}")),
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => failures.push(format!("{}: {msg}", c.name())),
            Err(p) => {
                let msg =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                failures.push(format!("{}: PANIC {}", c.name(), msg.unwrap_or_default()))
            }
        }
    }
    assert!(count > 0, "no fixture cases for {ops:?}");
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(40).collect();
        panic!(
            "{} of {count} cases failed:\n{}",
            failures.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

const GROUPS: &[&[&str]] = &[
    &["take", "gather"],
    &["scatter", "scatter_add", "scatter_prod", "scatter_max", "scatter_min"],
    &["take_along_axis", "put_along_axis", "scatter_add_along_axis"],
    &["roll", "diagonal", "trace", "meshgrid"],
    &["sort", "argsort", "partition", "argpartition", "topk"],
    &["softmax", "logsumexp"],
    &["rms_norm", "layer_norm"],
    &["rope"],
    &["sdpa"],
    &["einsum"],
];

#[test]
fn take_and_gather() {
    run_group(GROUPS[0]);
}

#[test]
fn scatters() {
    run_group(GROUPS[1]);
}

#[test]
fn along_axis() {
    run_group(GROUPS[2]);
}

#[test]
fn roll_diagonal_trace_meshgrid() {
    run_group(GROUPS[3]);
}

#[test]
fn sort_family() {
    run_group(GROUPS[4]);
}

#[test]
fn softmax_logsumexp() {
    run_group(GROUPS[5]);
}

#[test]
fn norms() {
    run_group(GROUPS[6]);
}

#[test]
fn rope() {
    run_group(GROUPS[7]);
}

#[test]
fn attention() {
    run_group(GROUPS[8]);
}

#[test]
fn einsum() {
    run_group(GROUPS[9]);
}

#[test]
fn every_fixture_op_is_run() {
    for c in &fixture().cases {
        let op = c["op"].as_str().unwrap();
        assert!(GROUPS.iter().any(|g| g.contains(&op)), "op {op} of the fixture belongs to no test");
    }
}

// ---------------------------------------------------------------------------------------------
// errors: bad arguments give an Err (at construction, or at evaluation for index values), never
// a panic

fn arange(n: usize, shape: &[usize]) -> Array {
    Array::from_slice(&(0..n).map(|i| i as f32).collect::<Vec<_>>(), shape).unwrap()
}

fn idx(v: &[i32]) -> Array {
    Array::from_slice(v, &[v.len()]).unwrap()
}

#[test]
fn out_of_range_indices_fail_at_evaluation() {
    let a = arange(12, &[3, 4]);
    let t = fx::take(&a, &idx(&[0, 3]), Some(0)).expect("bounds are checked at evaluation");
    assert!(t.eval().is_err(), "take of index 3 on an axis of 3");
    let t = fx::take(&a, &idx(&[-4]), Some(0)).unwrap();
    assert!(t.to_vec::<f32>().is_err(), "take of index -4 on an axis of 3");
    let t = fx::take(&a, &idx(&[12]), None).unwrap();
    assert!(t.eval().is_err(), "flat take of index 12 of 12 elements");
    let g = fx::gather(&a, &[idx(&[1, 4])], &[1], &[3, 1]).unwrap();
    assert!(g.eval().is_err(), "gather of index 4 on an axis of 4");
    let upd = fx::ones(&[2, 1, 4], Dtype::F32).unwrap();
    let s = fx::scatter_add(&a, &[idx(&[0, 5])], &upd, &[0]).unwrap();
    assert!(s.eval().is_err(), "scatter_add at index 5 on an axis of 3");
    let i2 = Array::from_slice(&[0i32, 9, 1], &[3, 1]).unwrap();
    let t = fx::take_along_axis(&a, &i2, Some(1)).unwrap();
    assert!(t.eval().is_err(), "take_along_axis of index 9 on an axis of 4");
    let p = fx::put_along_axis(&a, &i2, &Array::scalar(1.0f32), Some(1)).unwrap();
    assert!(p.eval().is_err(), "put_along_axis at index 9 on an axis of 4");
    // The array stays usable: a later, valid op on `a` works.
    assert_eq!(fx::take(&a, &idx(&[2]), Some(0)).unwrap().to_vec::<f32>().unwrap(), vec![8.0, 9.0, 10.0, 11.0]);
}

#[test]
fn bad_index_arguments_are_errors() {
    let a = arange(12, &[3, 4]);
    let fidx = Array::from_slice(&[0.0f32, 1.0], &[2]).unwrap();
    assert!(fx::take(&a, &fidx, Some(0)).is_err(), "float indices");
    assert!(fx::take(&a, &idx(&[0]), Some(2)).is_err(), "axis out of range");
    assert!(fx::gather(&a, &[idx(&[0])], &[0], &[1]).is_err(), "slice_sizes of the wrong rank");
    assert!(fx::gather(&a, &[idx(&[0])], &[0], &[1, 5]).is_err(), "slice larger than the axis");
    assert!(fx::scatter(&a, &[idx(&[0])], &fx::ones(&[1, 1, 5], Dtype::F32).unwrap(), &[0]).is_err());
    assert!(fx::take_along_axis(&a, &idx(&[0]), Some(0)).is_err(), "indices of another rank");
    assert!(fx::diagonal(&a, 0, 1, 1).is_err(), "same axes");
    assert!(fx::diagonal(&arange(3, &[3]), 0, 0, 1).is_err(), "1-d input");
    assert!(fx::meshgrid(&[arange(3, &[3])], false, "ji").is_err(), "unknown indexing");
}

#[test]
fn kth_and_k_out_of_range_are_errors() {
    let a = arange(10, &[2, 5]);
    assert!(fx::partition(&a, 5, Some(1)).is_err(), "kth = axis size");
    assert!(fx::argpartition(&a, 7, Some(-1)).is_err(), "kth beyond the axis");
    assert!(fx::partition(&a, 10, None).is_err(), "kth = flattened size");
    assert!(fx::partition(&a, 4, Some(1)).is_ok());
    assert!(fx::topk(&a, 6, Some(1)).is_err(), "k larger than the axis");
    assert!(fx::sort(&a, Some(2)).is_err(), "axis out of range");
}

#[test]
fn bad_fast_arguments_are_errors() {
    let x = arange(2 * 3 * 8, &[1, 2, 3, 8]);
    assert!(fast::rope(&x, 7, false, Some(10000.0), 1.0, 0i64, None).is_err(), "odd dims");
    assert!(fast::rope(&x, 10, false, Some(10000.0), 1.0, 0i64, None).is_err(), "dims > D");
    assert!(fast::rope(&arange(8, &[8]), 8, false, Some(10000.0), 1.0, 0i64, None).is_err(), "1-d input");
    let f = fx::ones(&[3], Dtype::F32).unwrap();
    assert!(fast::rope(&x, 8, false, None, 1.0, 0i64, Some(&f)).is_err(), "freqs of the wrong length");
    let f4 = fx::ones(&[4], Dtype::F32).unwrap();
    assert!(fast::rope(&x, 8, false, Some(10000.0), 1.0, 0i64, Some(&f4)).is_err(), "both base and freqs");
    assert!(fast::rope(&x, 8, false, None, 1.0, 0i64, None).is_err(), "neither base nor freqs");
    let off = Array::from_slice(&[1i32, 2], &[2]).unwrap();
    assert!(fast::rope(&x, 8, false, Some(10000.0), 1.0, &off, None).is_err(), "offset not a scalar");
    let xi = Array::from_slice(&[1i32; 16], &[2, 8]).unwrap();
    assert!(fast::rope(&xi, 8, false, Some(10000.0), 1.0, 0i64, None).is_err(), "integer input");

    assert!(fast::rms_norm(&x, Some(&fx::ones(&[7], Dtype::F32).unwrap()), 1e-5).is_err(), "weight of the wrong size");
    assert!(fast::layer_norm(&x, None, Some(&fx::ones(&[2, 8], Dtype::F32).unwrap()), 1e-5).is_err(), "2-d bias");

    let q = fx::zeros(&[1, 4, 3, 8], Dtype::F32).unwrap();
    let k = fx::zeros(&[1, 2, 5, 8], Dtype::F32).unwrap();
    let sdpa = |q: &Array, k: &Array, v: &Array, m: SdpaMask| fast::scaled_dot_product_attention(q, k, v, 0.5, m);
    assert!(sdpa(&q, &k, &k, SdpaMask::None).is_ok());
    let bad_mask = fx::zeros(&[3, 4], Dtype::F32).unwrap();
    assert!(sdpa(&q, &k, &k, SdpaMask::Array(bad_mask)).is_err(), "mask [3, 4] against [1, 4, 3, 5]");
    let bad_bool = fx::ones(&[1, 2, 3, 5], Dtype::Bool).unwrap();
    assert!(sdpa(&q, &k, &k, SdpaMask::Array(bad_bool)).is_err(), "mask with 2 heads against 4");
    let k3 = fx::zeros(&[1, 3, 5, 8], Dtype::F32).unwrap();
    assert!(sdpa(&q, &k3, &k3, SdpaMask::None).is_err(), "4 query heads over 3 key heads");
    let k_d = fx::zeros(&[1, 2, 5, 6], Dtype::F32).unwrap();
    assert!(sdpa(&q, &k_d, &k_d, SdpaMask::None).is_err(), "key width 6 against query width 8");
    assert!(sdpa(&fx::zeros(&[4, 3, 8], Dtype::F32).unwrap(), &k, &k, SdpaMask::None).is_err(), "3-d query");
}

#[test]
fn bad_einsum_specs_are_errors() {
    let a = arange(6, &[2, 3]);
    let b = arange(8, &[4, 2]);
    assert!(fx::einsum("ij,jk->ik", &[a.clone(), b.clone()]).is_err(), "j of sizes 3 and 4");
    assert!(fx::einsum("ij->ik", std::slice::from_ref(&a)).is_err(), "output label not in the inputs");
    assert!(fx::einsum("ijk->i", std::slice::from_ref(&a)).is_err(), "three labels for a 2-d operand");
    assert!(fx::einsum("ij,jk->ik", std::slice::from_ref(&a)).is_err(), "two specs, one operand");
    assert!(fx::einsum("ii", &[a]).is_err(), "diagonal of a non-square operand");
}
