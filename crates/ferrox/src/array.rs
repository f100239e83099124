//! [`Array`]: a cheap, shareable handle to a lazily computed n-dimensional array.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device::{current_stream, Stream};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::primitives::Op;

/// Evaluated contents: a buffer and the strided view of it this array is.
///
/// Offsets and strides count elements, not bytes. Several arrays (a transpose, a slice, a
/// broadcast) may view one buffer.
#[derive(Clone, Debug)]
pub struct Data {
    /// The memory.
    pub buffer: Arc<Buffer>,
    /// Offset of element `[0, 0, ...]` in the buffer, in elements.
    pub offset: usize,
    /// Step between neighbours along each axis, in elements (0 for broadcast axes).
    pub strides: Vec<isize>,
}

impl Data {
    /// A fresh buffer laid out row-major for `shape`.
    pub fn contiguous(buffer: Buffer, shape: &[usize]) -> Data {
        Data { buffer: Arc::new(buffer), offset: 0, strides: row_major_strides(shape) }
    }

    /// Pointer to element `[0, 0, ...]`, typed.
    pub fn ptr<T>(&self) -> *const T {
        // SAFETY: offset lies within the buffer by construction of every view.
        unsafe { (self.buffer.host_ptr() as *const T).add(self.offset) }
    }

    /// True if the view is row-major contiguous for `shape` (size-1 axes may have any stride;
    /// an empty array always is).
    pub fn is_row_contiguous(&self, shape: &[usize]) -> bool {
        if shape.contains(&0) {
            return true;
        }
        let mut expected = 1isize;
        for (&n, &s) in shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n as isize;
        }
        true
    }

    /// The elements as a slice, if the view is row-major contiguous.
    pub fn as_slice<T>(&self, shape: &[usize]) -> Option<&[T]> {
        if self.is_row_contiguous(shape) {
            let n: usize = shape.iter().product();
            // SAFETY: contiguous views cover n elements from ptr.
            Some(unsafe { std::slice::from_raw_parts(self.ptr::<T>(), n) })
        } else {
            None
        }
    }
}

/// Row-major (C order) strides of `shape`, in elements.
pub fn row_major_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i].max(1) as isize;
    }
    strides
}

/// A recorded op waiting to run.
pub(crate) struct Pending {
    pub op: Op,
    pub inputs: Vec<Array>,
    pub stream: Stream,
}

pub(crate) enum State {
    Pending(Pending),
    Ready(Data),
}

pub(crate) struct Node {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub state: Mutex<State>,
    /// The latest graph walk that reached this node (see `eval::topological_order`).
    pub visited: AtomicU64,
}

/// A lazy n-dimensional array.
///
/// Building an op records a node and returns at once; the data is computed by [`crate::eval`],
/// [`Array::eval`], [`Array::item`] or [`Array::to_vec`]. Cloning is cheap (a reference count),
/// and arrays are `Send + Sync`. Once evaluated, an array forgets the graph that made it.
#[derive(Clone)]
pub struct Array(pub(crate) Arc<Node>);

impl Array {
    /// An evaluated array of `shape` over `data`.
    pub(crate) fn from_data(shape: Vec<usize>, dtype: Dtype, data: Data) -> Array {
        Array(Arc::new(Node { shape, dtype, state: Mutex::new(State::Ready(data)), visited: AtomicU64::new(0) }))
    }

    /// Records `op` over `inputs`, producing an array of `shape` and `dtype`, on the current
    /// stream.
    pub(crate) fn from_op(shape: Vec<usize>, dtype: Dtype, op: Op, inputs: Vec<Array>) -> Array {
        let stream = current_stream();
        let pending = Pending { op, inputs, stream };
        Array(Arc::new(Node { shape, dtype, state: Mutex::new(State::Pending(pending)), visited: AtomicU64::new(0) }))
    }

    /// An array holding a copy of `data`, laid out as `shape`.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Array> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape("array", format!("{} elements cannot have shape {shape:?}", data.len())));
        }
        let mut buffer = Buffer::alloc(std::mem::size_of_val(data))?;
        buffer.as_bytes_mut().copy_from_slice(bytes_of(data));
        Ok(Array::from_data(shape.to_vec(), T::DTYPE, Data::contiguous(buffer, shape)))
    }

    /// A one-dimensional array holding a copy of `data`.
    pub fn from_vec<T: Element>(data: Vec<T>) -> Array {
        let n = data.len();
        Array::from_slice(&data, &[n]).expect("length matches by construction")
    }

    /// A zero-dimensional array holding `value`.
    pub fn scalar<T: Element>(value: T) -> Array {
        Array::from_slice(&[value], &[]).expect("one element fits the empty shape")
    }

    /// An array of raw bytes interpreted as `dtype` with `shape`.
    pub fn from_bytes(bytes: &[u8], shape: &[usize], dtype: Dtype) -> Result<Array> {
        let n: usize = shape.iter().product();
        if n * dtype.size() != bytes.len() {
            return Err(Error::shape("from_bytes", format!("{} bytes do not hold {shape:?} of {dtype}", bytes.len())));
        }
        let mut buffer = Buffer::alloc(bytes.len())?;
        buffer.as_bytes_mut().copy_from_slice(bytes);
        Ok(Array::from_data(shape.to_vec(), dtype, Data::contiguous(buffer, shape)))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The size of axis `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let ax = crate::shape::normalize_axis(axis, self.ndim(), "dim")?;
        Ok(self.0.shape[ax])
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.0.dtype
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.0.shape.len()
    }

    /// The number of elements.
    pub fn size(&self) -> usize {
        self.0.shape.iter().product()
    }

    /// The number of bytes of the elements.
    pub fn nbytes(&self) -> usize {
        self.size() * self.dtype().size()
    }

    /// True once the data has been computed.
    pub fn is_evaluated(&self) -> bool {
        matches!(*self.state(), State::Ready(_))
    }

    /// True if both handles are the same array (not merely equal values).
    pub fn same(&self, other: &Array) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The op and inputs of a pending array (`None` once evaluated).
    pub(crate) fn pending_parts(&self) -> Option<(Op, Vec<Array>)> {
        match &*self.state() {
            State::Pending(p) => Some((p.op.clone(), p.inputs.clone())),
            State::Ready(_) => None,
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Computes this array (and what it depends on).
    pub fn eval(&self) -> Result<()> {
        crate::eval::eval(&[self])
    }

    /// The evaluated data. Evaluates first if needed.
    pub fn data(&self) -> Result<Data> {
        if let State::Ready(d) = &*self.state() {
            return Ok(d.clone());
        }
        self.eval()?;
        match &*self.state() {
            State::Ready(d) => Ok(d.clone()),
            State::Pending(_) => unreachable!("eval leaves the array ready"),
        }
    }

    /// The elements in row-major order, converted to `T` with `astype` rules.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        // Already of that type and row-major once evaluated: read it without a copy node (and
        // without an evaluation of its own: a decode step reads its picks this way).
        if self.dtype() == T::DTYPE {
            if let Some(v) = self.data()?.as_slice::<T>(self.shape()) {
                return Ok(v.to_vec());
            }
        }
        let a = if self.dtype() == T::DTYPE { self.clone() } else { crate::ops::astype(self, T::DTYPE)? };
        let a = crate::ops::contiguous(&a)?;
        let d = a.data()?;
        Ok(d.as_slice::<T>(a.shape()).expect("contiguous by construction").to_vec())
    }

    /// The single element of a one-element array, converted to `T`.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::shape(
                "item",
                format!("item() needs exactly one element; the array has shape {:?}", self.shape()),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Unlink a long pending chain iteratively so dropping it cannot overflow the stack.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let State::Pending(p) = state else { return };
        let mut stack = std::mem::take(&mut p.inputs);
        while let Some(a) = stack.pop() {
            if let Some(mut node) = Arc::into_inner(a.0) {
                if let State::Pending(p) = node.state.get_mut().unwrap_or_else(|e| e.into_inner()) {
                    stack.append(&mut p.inputs);
                }
            }
        }
    }
}

fn bytes_of<T: Element>(data: &[T]) -> &[u8] {
    // SAFETY: every Element is a plain-old-data type without padding.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

macro_rules! from_scalar {
    ($($t:ty),*) => {$(
        impl From<$t> for Array {
            fn from(v: $t) -> Array {
                Array::scalar(v)
            }
        }
    )*};
}
from_scalar!(bool, u8, u16, u32, u64, i8, i16, i32, i64, f32, f64, half::f16, half::bf16);

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
