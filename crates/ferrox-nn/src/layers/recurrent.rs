//! Recurrent layers, MLX's `nn.RNN`, `nn.GRU` and `nn.LSTM`: inputs `[..., L, D]` are
//! projected for all steps at once, then the hidden state runs over the `L` steps.
//! Parameter names are MLX's (`Wxh`, `Wx`, `bhn`, …) so checkpoints carry over.
#![allow(non_snake_case)]

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::module::ModuleState;
use crate::Module;

fn uniform(shape: &[usize], hidden: usize) -> Result<Array> {
    let k = 1.0 / (hidden.max(1) as f64).sqrt();
    fx::random::uniform(-k, k, shape, Dtype::F32, None)
}

/// `x Wᵀ (+ b)` over the last axis.
fn project(x: &Array, w: &Array, b: Option<&Array>) -> Result<Array> {
    if x.ndim() < 2 || x.shape()[x.ndim() - 1] != w.shape()[1] {
        return Err(Error::shape(
            "recurrent",
            format!("input of shape {:?} must be [..., L, {}]", x.shape(), w.shape()[1]),
        ));
    }
    match b {
        Some(b) => fx::addmm(b, x, &w.t(), 1.0, 1.0),
        None => fx::matmul(x, &w.t()),
    }
}

/// Step `t` of `[..., L, F]`: `[..., F]`.
fn step(x: &Array, t: usize) -> Result<Array> {
    let axis = x.ndim() as isize - 2;
    fx::squeeze(&fx::slice_axis(x, axis, t as isize, t as isize + 1)?, Some(&[axis]))
}

fn halves(a: &Array, at: usize) -> Result<(Array, Array)> {
    let n = a.shape()[a.ndim() - 1] as isize;
    Ok((fx::slice_axis(a, -1, 0, at as isize)?, fx::slice_axis(a, -1, at as isize, n)?))
}

/// Elman RNN: `h_t = tanh(x_t Wxhᵀ + bias + h_{t−1} Whhᵀ)` (or another nonlinearity).
#[derive(Module, Clone, Debug)]
pub struct Rnn {
    /// `[hidden, input]`.
    pub Wxh: Array,
    /// `[hidden, hidden]`.
    pub Whh: Array,
    /// `[hidden]`, if the layer has a bias.
    pub bias: Option<Array>,
    #[module(skip)]
    nonlinearity: fn(&Array) -> Result<Array>,
    state: ModuleState,
}

impl Rnn {
    /// An RNN with tanh, weights uniform in `±1/√hidden`.
    pub fn new(input_size: usize, hidden_size: usize, bias: bool) -> Result<Rnn> {
        let Wxh = uniform(&[hidden_size, input_size], hidden_size)?;
        let Whh = uniform(&[hidden_size, hidden_size], hidden_size)?;
        let bias = if bias { Some(uniform(&[hidden_size], hidden_size)?) } else { None };
        Ok(Rnn { Wxh, Whh, bias, nonlinearity: fx::tanh, state: ModuleState::new() })
    }

    /// The layer with another nonlinearity (e.g. `activations::relu`).
    pub fn with_nonlinearity(mut self, f: fn(&Array) -> Result<Array>) -> Rnn {
        self.nonlinearity = f;
        self
    }

    /// Every step's hidden state `[..., L, hidden]`, from `hidden` (`[..., hidden]`) or zeros.
    pub fn forward(&self, x: &Array, hidden: Option<&Array>) -> Result<Array> {
        let x = project(x, &self.Wxh, self.bias.as_ref())?;
        let mut h = hidden.cloned();
        let mut all = Vec::new();
        for t in 0..x.shape()[x.ndim() - 2] {
            let xt = step(&x, t)?;
            let pre = match &h {
                Some(h) => fx::addmm(&xt, h, &self.Whh.t(), 1.0, 1.0)?,
                None => xt,
            };
            let next = (self.nonlinearity)(&pre)?;
            all.push(next.clone());
            h = Some(next);
        }
        fx::stack(&all, -2)
    }
}

/// Gated recurrent unit (PyTorch's formulation: the reset gate scales `h Whₙᵀ + bhn`).
#[derive(Module, Clone, Debug)]
pub struct Gru {
    /// `[3·hidden, input]`: reset, update, candidate.
    pub Wx: Array,
    /// `[3·hidden, hidden]`.
    pub Wh: Array,
    /// `[3·hidden]`, if the layer has a bias.
    pub b: Option<Array>,
    /// `[hidden]`: the candidate's hidden-side bias, if the layer has a bias.
    pub bhn: Option<Array>,
    state: ModuleState,
}

impl Gru {
    /// A GRU with weights uniform in `±1/√hidden`.
    pub fn new(input_size: usize, hidden_size: usize, bias: bool) -> Result<Gru> {
        let Wx = uniform(&[3 * hidden_size, input_size], hidden_size)?;
        let Wh = uniform(&[3 * hidden_size, hidden_size], hidden_size)?;
        let (b, bhn) = if bias {
            (Some(uniform(&[3 * hidden_size], hidden_size)?), Some(uniform(&[hidden_size], hidden_size)?))
        } else {
            (None, None)
        };
        Ok(Gru { Wx, Wh, b, bhn, state: ModuleState::new() })
    }

    /// Every step's hidden state `[..., L, hidden]`, from `hidden` or zeros.
    pub fn forward(&self, x: &Array, hidden: Option<&Array>) -> Result<Array> {
        let hs = self.Wh.shape()[1];
        let x = project(x, &self.Wx, self.b.as_ref())?;
        let (x_rz, x_n) = halves(&x, 2 * hs)?;
        let mut h = hidden.cloned();
        let mut all = Vec::new();
        for t in 0..x.shape()[x.ndim() - 2] {
            let mut rz = step(&x_rz, t)?;
            let mut h_n = self.bhn.clone();
            if let Some(h) = &h {
                let (p_rz, p_n) = halves(&fx::matmul(h, &self.Wh.t())?, 2 * hs)?;
                rz = fx::add(&rz, &p_rz)?;
                h_n = Some(match &self.bhn {
                    Some(b) => fx::add(&p_n, b)?,
                    None => p_n,
                });
            }
            let (r, z) = halves(&fx::sigmoid(&rz)?, hs)?;
            let mut n = step(&x_n, t)?;
            if let Some(hn) = &h_n {
                n = fx::add(&n, &fx::multiply(&r, hn)?)?;
            }
            let n = fx::tanh(&n)?;
            let keep_new = fx::multiply(&fx::subtract(1.0, &z)?, &n)?;
            let next = match &h {
                Some(h) => fx::add(&keep_new, &fx::multiply(&z, h)?)?,
                None => keep_new,
            };
            all.push(next.clone());
            h = Some(next);
        }
        fx::stack(&all, -2)
    }
}

/// Long short-term memory: input, forget, cell and output gates (in that order in `Wx`).
#[derive(Module, Clone, Debug)]
pub struct Lstm {
    /// `[4·hidden, input]`.
    pub Wx: Array,
    /// `[4·hidden, hidden]`.
    pub Wh: Array,
    /// `[4·hidden]`, if the layer has a bias.
    pub bias: Option<Array>,
    state: ModuleState,
}

impl Lstm {
    /// An LSTM with weights uniform in `±1/√hidden`.
    pub fn new(input_size: usize, hidden_size: usize, bias: bool) -> Result<Lstm> {
        let Wx = uniform(&[4 * hidden_size, input_size], hidden_size)?;
        let Wh = uniform(&[4 * hidden_size, hidden_size], hidden_size)?;
        let bias = if bias { Some(uniform(&[4 * hidden_size], hidden_size)?) } else { None };
        Ok(Lstm { Wx, Wh, bias, state: ModuleState::new() })
    }

    /// Every step's hidden and cell states, each `[..., L, hidden]`, from `hidden` / `cell`
    /// or zeros.
    pub fn forward(&self, x: &Array, hidden: Option<&Array>, cell: Option<&Array>) -> Result<(Array, Array)> {
        let hs = self.Wh.shape()[1] as isize;
        let x = project(x, &self.Wx, self.bias.as_ref())?;
        let (mut h, mut c) = (hidden.cloned(), cell.cloned());
        let (mut all_h, mut all_c) = (Vec::new(), Vec::new());
        for t in 0..x.shape()[x.ndim() - 2] {
            let mut ifgo = step(&x, t)?;
            if let Some(h) = &h {
                ifgo = fx::addmm(&ifgo, h, &self.Wh.t(), 1.0, 1.0)?;
            }
            let gate = |k: isize| fx::slice_axis(&ifgo, -1, k * hs, (k + 1) * hs);
            let (i, f, g, o) =
                (fx::sigmoid(&gate(0)?)?, fx::sigmoid(&gate(1)?)?, fx::tanh(&gate(2)?)?, fx::sigmoid(&gate(3)?)?);
            let ig = fx::multiply(&i, &g)?;
            let next_c = match &c {
                Some(c) => fx::add(&fx::multiply(&f, c)?, &ig)?,
                None => ig,
            };
            let next_h = fx::multiply(&o, &fx::tanh(&next_c)?)?;
            all_h.push(next_h.clone());
            all_c.push(next_c.clone());
            h = Some(next_h);
            c = Some(next_c);
        }
        Ok((fx::stack(&all_h, -2)?, fx::stack(&all_c, -2)?))
    }
}
