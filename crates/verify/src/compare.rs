//! Output comparison metrics.

use ndarray::ArrayD;

/// How far `got` is from `want`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diff {
    pub max_abs: f64,
    /// `||got - want||_2 / ||want||_2` (the plain L2 error when `want` is 0).
    pub rel_l2: f64,
    pub cosine: f64,
}

impl Diff {
    pub fn within(&self, max_abs: f64, rel_l2: f64) -> bool {
        self.max_abs <= max_abs && self.rel_l2 <= rel_l2
    }
}

/// Compares two tensors of the same shape; NaN anywhere counts as infinite error.
pub fn diff(got: &ArrayD<f32>, want: &ArrayD<f32>) -> Result<Diff, String> {
    if got.shape() != want.shape() {
        return Err(format!("shapes differ: {:?} against {:?}", got.shape(), want.shape()));
    }
    let (mut max_abs, mut err2, mut want2, mut got2, mut dot) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want.iter()) {
        let (g, w) = (g as f64, w as f64);
        let d = (g - w).abs();
        max_abs = if d.is_nan() { f64::INFINITY } else { max_abs.max(d) };
        err2 += (g - w) * (g - w);
        want2 += w * w;
        got2 += g * g;
        dot += g * w;
    }
    let rel_l2 = if want2 > 0.0 { (err2 / want2).sqrt() } else { err2.sqrt() };
    let cosine = if want2 > 0.0 && got2 > 0.0 {
        dot / (want2.sqrt() * got2.sqrt())
    } else if err2 == 0.0 {
        1.0
    } else {
        0.0
    };
    let nan = |x: f64| if x.is_nan() { f64::INFINITY } else { x };
    Ok(Diff { max_abs, rel_l2: nan(rel_l2), cosine: if cosine.is_nan() { 0.0 } else { cosine } })
}

/// Elements outside `|got - want| <= atol + rtol * |want|` (numpy's
/// `allclose` rule); NaN counts as outside. Shapes must match.
pub fn allclose_violations(got: &ArrayD<f32>, want: &ArrayD<f32>, atol: f64, rtol: f64) -> Result<usize, String> {
    if got.shape() != want.shape() {
        return Err(format!("shapes differ: {:?} against {:?}", got.shape(), want.shape()));
    }
    Ok(got
        .iter()
        .zip(want.iter())
        .filter(|(&g, &w)| {
            let d = (g as f64 - w as f64).abs();
            let ok = d <= atol + rtol * (w as f64).abs();
            !ok
        })
        .count())
}
