//! Printing arrays the way MLX does: `array([[1, 2], [3, 4]], dtype=int32)`.

use std::fmt;

use crate::array::Array;
use crate::dtype::Dtype;

/// Arrays larger than this print their first and last few entries per axis.
const SUMMARIZE_OVER: usize = 1000;
const EDGE: usize = 3;

/// Formats a float with six significant digits, as C's `%g` (MLX's default).
pub(crate) fn format_g(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let exp = v.abs().log10().floor() as i32;
    // Round to 6 significant digits first: rounding can bump the exponent.
    let s = format!("{:.5e}", v);
    let (mant, e) = s.split_once('e').unwrap();
    let e: i32 = e.parse().unwrap_or(exp);
    if !(-5..6).contains(&e) {
        let mant = trim_zeros(mant);
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (5 - e).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, v)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn format_elem(dtype: Dtype, v: f64, raw_int: i128) -> String {
    match dtype {
        Dtype::Bool => {
            if raw_int != 0 {
                "true".into()
            } else {
                "false".into()
            }
        }
        d if d.is_float() => format_g(v),
        _ => raw_int.to_string(),
    }
}

fn write_axis(
    f: &mut fmt::Formatter<'_>,
    shape: &[usize],
    items: &[String],
    width: usize,
    indent: usize,
    summarize: bool,
) -> fmt::Result {
    if shape.is_empty() {
        return write!(f, "{:>width$}", items[0]);
    }
    let n = shape[0];
    let step = items.len() / n.max(1);
    write!(f, "[")?;
    let idx: Vec<Option<usize>> = if summarize && n > 2 * EDGE {
        (0..EDGE).map(Some).chain([None]).chain((n - EDGE..n).map(Some)).collect()
    } else {
        (0..n).map(Some).collect()
    };
    for (j, i) in idx.iter().enumerate() {
        if j > 0 {
            if shape.len() > 1 {
                write!(f, ",{}", "\n".repeat(shape.len() - 1))?;
                write!(f, "{:indent$}", "", indent = indent + 1)?;
            } else {
                write!(f, ", ")?;
            }
        }
        match i {
            Some(i) => write_axis(f, &shape[1..], &items[i * step..(i + 1) * step], width, indent + 1, summarize)?,
            None => write!(f, "...")?,
        }
    }
    write!(f, "]")
}

impl fmt::Display for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (vals, ints) = match (self.to_vec::<f64>(), self.to_vec::<i64>()) {
            (Ok(v), Ok(i)) => (v, i),
            (Err(e), _) | (_, Err(e)) => return write!(f, "array(<error: {e}>, dtype={})", self.dtype()),
        };
        let ints: Vec<i128> = match self.dtype() {
            Dtype::U64 => self.to_vec::<u64>().map(|v| v.into_iter().map(|x| x as i128).collect()).unwrap_or_default(),
            _ => ints.into_iter().map(|x| x as i128).collect(),
        };
        let items: Vec<String> = vals.iter().zip(&ints).map(|(&v, &i)| format_elem(self.dtype(), v, i)).collect();
        let bool_names = |s: String| match s.as_str() {
            "true" => "True".to_string(),
            "false" => "False".to_string(),
            _ => s,
        };
        let items: Vec<String> = items.into_iter().map(bool_names).collect();
        let width = if self.ndim() > 1 { items.iter().map(|s| s.len()).max().unwrap_or(0) } else { 0 };
        write!(f, "array(")?;
        write_axis(f, self.shape(), &items, width, 6, self.size() > SUMMARIZE_OVER)?;
        write!(f, ", dtype={})", self.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_format() {
        assert_eq!(format_g(1.0), "1");
        assert_eq!(format_g(2.5), "2.5");
        assert_eq!(format_g(1.234567891), "1.23457");
        assert_eq!(format_g(1e-7), "1e-07");
        assert_eq!(format_g(123456789.0), "1.23457e+08");
        assert_eq!(format_g(0.0001), "0.0001");
    }

    #[test]
    fn prints_like_mlx() {
        let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
        assert_eq!(a.to_string(), "array([[1, 2],\n       [3, 4]], dtype=int32)");
        let b = Array::from_slice(&[1.0f32, 2.5], &[2]).unwrap();
        assert_eq!(b.to_string(), "array([1, 2.5], dtype=float32)");
        assert_eq!(Array::scalar(true).to_string(), "array(True, dtype=bool)");
    }
}
