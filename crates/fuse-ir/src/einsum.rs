//! Einsum equations (`"bhqd,bhkd->bhqk"`): parsed, checked against the
//! inputs' shapes, and rewritten with one more leading index (a member
//! axis, for fusion).
//!
//! An equation is held in its explicit form: no spaces, with `->` and the
//! output spelled out. The implicit form (`"ij,jk"`) gets the output ONNX
//! gives it: the ellipsis dimensions, then the letters that appear once,
//! in alphabetical order (lower case first, as ONNX Runtime orders them;
//! numpy puts upper case first). An ellipsis (`...`) stands for the
//! dimensions an input has beyond its letters; the inputs' ellipsis
//! dimensions broadcast numpy-style, and so does a letter of size 1
//! against a larger size.

use std::collections::HashMap;

use crate::dims::broadcast;

/// One operand's (or the output's) subscripts: letters, optionally an
/// ellipsis between `before` and `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub before: Vec<char>,
    pub ellipsis: bool,
    pub after: Vec<char>,
}

impl Term {
    fn parse(s: &str) -> Result<Term, String> {
        let (before, ellipsis, after) = match s.find("...") {
            Some(i) => (&s[..i], true, &s[i + 3..]),
            None => (s, false, ""),
        };
        let letters = |p: &str| -> Result<Vec<char>, String> {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        Ok(c)
                    } else {
                        Err(format!("`{c}` in term `{s}` is not a letter (or one ellipsis `...`)"))
                    }
                })
                .collect()
        };
        Ok(Term { before: letters(before)?, ellipsis, after: letters(after)? })
    }

    /// The letters, in order.
    pub fn letters(&self) -> impl Iterator<Item = char> + '_ {
        self.before.iter().chain(&self.after).copied()
    }

    fn text(&self) -> String {
        let mut s: String = self.before.iter().collect();
        if self.ellipsis {
            s.push_str("...");
        }
        s.extend(&self.after);
        s
    }
}

/// A parsed equation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equation {
    pub inputs: Vec<Term>,
    pub output: Term,
}

impl Equation {
    /// Parses an ONNX `equation` attribute (spaces ignored; the output
    /// derived when there is no `->`).
    pub fn parse(equation: &str) -> Result<Equation, String> {
        let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (eq.as_str(), None),
        };
        let inputs = lhs.split(',').map(Term::parse).collect::<Result<Vec<_>, _>>()?;
        let output = match rhs {
            Some(r) => Term::parse(r)?,
            None => {
                let mut count: HashMap<char, usize> = HashMap::new();
                for c in inputs.iter().flat_map(Term::letters) {
                    *count.entry(c).or_default() += 1;
                }
                let mut once: Vec<char> = count.into_iter().filter(|&(_, n)| n == 1).map(|(c, _)| c).collect();
                // Lower case first, as ONNX Runtime orders them.
                once.sort_unstable_by_key(|c| (c.is_ascii_uppercase(), *c));
                Term { before: vec![], ellipsis: inputs.iter().any(|t| t.ellipsis), after: once }
            }
        };
        let e = Equation { inputs, output };
        let known: Vec<char> = e.inputs.iter().flat_map(Term::letters).collect();
        let mut seen = vec![];
        for c in e.output.letters() {
            if !known.contains(&c) {
                return Err(format!("output letter `{c}` of `{equation}` is in no input"));
            }
            if seen.contains(&c) {
                return Err(format!("output letter `{c}` of `{equation}` appears twice"));
            }
            seen.push(c);
        }
        if e.output.ellipsis && !e.inputs.iter().any(|t| t.ellipsis) {
            return Err(format!("the output of `{equation}` has an ellipsis that no input has"));
        }
        Ok(e)
    }

    /// The explicit form, as ONNX reads it.
    pub fn text(&self) -> String {
        let ins: Vec<String> = self.inputs.iter().map(Term::text).collect();
        format!("{}->{}", ins.join(","), self.output.text())
    }

    /// Each letter's size and the broadcast ellipsis shape, for inputs of
    /// these shapes.
    pub fn sizes(&self, shapes: &[&[usize]]) -> Result<(HashMap<char, usize>, Vec<usize>), String> {
        if shapes.len() != self.inputs.len() {
            return Err(format!("{} inputs for an equation of {} operands", shapes.len(), self.inputs.len()));
        }
        let mut sizes: HashMap<char, usize> = HashMap::new();
        let mut ell: Vec<usize> = vec![];
        for (i, (t, s)) in self.inputs.iter().zip(shapes).enumerate() {
            let (nb, na) = (t.before.len(), t.after.len());
            let fits = if t.ellipsis { s.len() >= nb + na } else { s.len() == nb + na };
            if !fits {
                return Err(format!("input {i} has rank {} but term `{}` has {} letters", s.len(), t.text(), nb + na));
            }
            let dims = s[..nb].iter().chain(&s[s.len() - na..]);
            for (c, &d) in t.letters().zip(dims) {
                // Equal, or 1 against a larger size (which it broadcasts to).
                let size = match sizes.get(&c) {
                    Some(&prev) if prev != d && prev != 1 && d != 1 => {
                        return Err(format!("letter `{c}` is {prev} in one place and {d} in input {i}"));
                    }
                    Some(&prev) => prev.max(d),
                    None => d,
                };
                sizes.insert(c, size);
            }
            if t.ellipsis {
                ell = broadcast(&ell, &s[nb..s.len() - na])
                    .map_err(|e| format!("the ellipsis dimensions of input {i}: {e}"))?;
            }
        }
        Ok((sizes, ell))
    }

    /// The output shape for inputs of these shapes.
    pub fn output_shape(&self, shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (sizes, ell) = self.sizes(shapes)?;
        if !self.output.ellipsis && !ell.is_empty() {
            return Err("the inputs have ellipsis dimensions the output drops (not supported)".into());
        }
        let mut out: Vec<usize> = self.output.before.iter().map(|c| sizes[c]).collect();
        if self.output.ellipsis {
            out.extend(&ell);
        }
        out.extend(self.output.after.iter().map(|c| sizes[c]));
        Ok(out)
    }

    /// Multiply-adds of one evaluation: the product of every letter's size
    /// and the ellipsis dimensions.
    pub fn macs(&self, shapes: &[&[usize]]) -> Result<f64, String> {
        let (sizes, ell) = self.sizes(shapes)?;
        Ok(sizes.values().chain(&ell).map(|&d| d as f64).product())
    }

    /// The letters no input's term uses, in order.
    fn free_letters(&self) -> impl Iterator<Item = char> {
        let used: Vec<char> = self.inputs.iter().flat_map(Term::letters).collect();
        ('a'..='z').chain('A'..='Z').filter(move |c| !used.contains(c))
    }

    /// The same equation with a new letter in front of the inputs marked
    /// in `lead` and of the output: for operands stacked on a new leading
    /// axis (member k's operand at index k), the output stacked likewise.
    /// Operands not marked broadcast over it. `None` when no letter is
    /// free.
    pub fn with_leading(&self, lead: &[bool]) -> Option<Equation> {
        let z = self.free_letters().next()?;
        let mut e = self.clone();
        for (t, &l) in e.inputs.iter_mut().zip(lead) {
            if l {
                t.before.insert(0, z);
            }
        }
        e.output.before.insert(0, z);
        Some(e)
    }
}

/// One operand's steps in [`Lowered`]: a sum over `sum_axes` (dropped),
/// then a transpose by `perm`, then a reshape to `shape`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperandSteps {
    pub sum_axes: Vec<usize>,
    pub perm: Vec<usize>,
    pub shape: Vec<usize>,
}

/// An einsum of one or two operands as the ops every backend has (Core
/// ML's MIL has no general einsum): each operand summed over the letters
/// only it has and that the output drops, transposed and reshaped to
/// `[batch, rows, inner]` and `[batch, inner, cols]`; one batched matmul
/// (two operands); then a reshape to the output's letters in the order
/// they were grouped, and a transpose to the output's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lowered {
    pub operands: Vec<OperandSteps>,
    pub reshape: Vec<usize>,
    pub perm: Vec<usize>,
}

impl Equation {
    /// Each operand's letters, one per axis, with the ellipsis spelled out
    /// in letters no term uses (right-aligned across the operands, as the
    /// ellipsis dimensions broadcast), and the output's.
    fn spelled(&self, shapes: &[&[usize]]) -> Result<(Vec<Vec<char>>, Vec<char>), String> {
        let (_, ell) = self.sizes(shapes)?;
        let free: Vec<char> = self.free_letters().take(ell.len()).collect();
        if free.len() < ell.len() {
            return Err("too many letters to spell out the ellipsis".into());
        }
        let spell = |t: &Term, rank: usize| -> Vec<char> {
            let k = rank - t.before.len() - t.after.len();
            let mut v = t.before.clone();
            if t.ellipsis {
                v.extend(&free[free.len() - k..]);
            }
            v.extend(&t.after);
            v
        };
        let ins = self.inputs.iter().zip(shapes).map(|(t, s)| spell(t, s.len())).collect();
        Ok((ins, spell(&self.output, self.output.before.len() + ell.len() + self.output.after.len())))
    }

    /// This equation on inputs of these shapes as transposes, reshapes,
    /// sums and at most one batched matmul ([`Lowered`]). One or two
    /// operands, no letter repeated within one (a diagonal).
    pub fn lowered(&self, shapes: &[&[usize]]) -> Result<Lowered, String> {
        if !(1..=2).contains(&shapes.len()) {
            return Err(format!("{} operands (one or two are lowered)", shapes.len()));
        }
        let (ins, out) = self.spelled(shapes)?;
        for t in &ins {
            if let Some(c) = t.iter().find(|c| t.iter().filter(|d| d == c).count() > 1) {
                return Err(format!("letter `{c}` repeats within one operand (a diagonal is not lowered)"));
            }
        }
        let size = |k: usize, c: char| ins[k].iter().position(|&d| d == c).map(|i| shapes[k][i]);
        // What each operand keeps: its letters minus those it broadcasts
        // (size 1 against the other operand's larger size) and then those
        // summed away (the output drops them and the other operand does
        // not keep them).
        let other = |k: usize, c: char| (ins.len() == 2).then(|| size(1 - k, c)).flatten();
        let unbroadcast: Vec<Vec<char>> = (0..ins.len())
            .map(|k| {
                let broadcast = |c: char| size(k, c) == Some(1) && other(k, c).is_some_and(|d| d > 1);
                ins[k].iter().copied().filter(|&c| !broadcast(c)).collect()
            })
            .collect();
        let kept: Vec<Vec<char>> = (0..ins.len())
            .map(|k| {
                let in_other = |c: char| ins.len() == 2 && unbroadcast[1 - k].contains(&c);
                unbroadcast[k].iter().copied().filter(|&c| out.contains(&c) || in_other(c)).collect()
            })
            .collect();
        let has = |k: usize, c: char| kept.get(k).is_some_and(|v| v.contains(&c));
        let dim = |c: char| (0..ins.len()).filter_map(|k| if has(k, c) { size(k, c) } else { None }).max().unwrap_or(1);
        let in_order = |f: &dyn Fn(char) -> bool| -> Vec<char> { out.iter().copied().filter(|&c| f(c)).collect() };
        let batch = in_order(&|c| has(0, c) && has(1, c));
        let left = in_order(&|c| has(0, c) && !has(1, c));
        let right = in_order(&|c| has(1, c) && !has(0, c));
        let inner: Vec<char> = kept[0].iter().copied().filter(|&c| !out.contains(&c) && has(1, c)).collect();
        let prod = |v: &[char]| v.iter().map(|&c| dim(c)).product::<usize>();
        let steps = |k: usize, order: Vec<char>, shape: Vec<usize>| -> OperandSteps {
            let sum_axes = (0..ins[k].len()).filter(|&i| !kept[k].contains(&ins[k][i])).collect();
            let perm = order.iter().map(|c| kept[k].iter().position(|d| d == c).expect("a kept letter")).collect();
            OperandSteps { sum_axes, perm, shape }
        };
        let grouped: Vec<char>;
        let operands = if ins.len() == 1 {
            grouped = out.clone();
            vec![steps(0, out.clone(), out.iter().map(|&c| dim(c)).collect())]
        } else {
            grouped = [&batch[..], &left, &right].concat();
            let a = [&batch[..], &left, &inner].concat();
            let b = [&batch[..], &inner, &right].concat();
            vec![
                steps(0, a, vec![prod(&batch), prod(&left), prod(&inner)]),
                steps(1, b, vec![prod(&batch), prod(&inner), prod(&right)]),
            ]
        };
        let perm = out.iter().map(|c| grouped.iter().position(|d| d == c).expect("an output letter")).collect();
        Ok(Lowered { operands, reshape: grouped.iter().map(|&c| dim(c)).collect(), perm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_explicit_implicit_and_ellipsis_forms() {
        let e = Equation::parse("bhqd, bhkd -> bhqk").unwrap();
        assert_eq!(e.text(), "bhqd,bhkd->bhqk");
        assert_eq!(e.output_shape(&[&[2, 3, 5, 4], &[2, 3, 7, 4]]).unwrap(), [2, 3, 5, 7]);
        assert_eq!(e.macs(&[&[2, 3, 5, 4], &[2, 3, 7, 4]]).unwrap(), (2 * 3 * 5 * 4 * 7) as f64);
        // Implicit: letters that appear once, sorted.
        assert_eq!(Equation::parse("ij,jk").unwrap().text(), "ij,jk->ik");
        assert_eq!(Equation::parse("ba").unwrap().text(), "ba->ab");
        assert_eq!(Equation::parse("Ba,C").unwrap().text(), "Ba,C->aBC");
        assert_eq!(Equation::parse("...ij,...jk").unwrap().text(), "...ij,...jk->...ik");
        // Ellipsis dimensions broadcast.
        let e = Equation::parse("...ij,...jk->...ik").unwrap();
        assert_eq!(e.output_shape(&[&[4, 1, 2, 3], &[5, 3, 6]]).unwrap(), [4, 5, 2, 6]);
        // MViTv2's relative positions.
        let e = Equation::parse("byhwc,hkc->byhwk").unwrap();
        assert_eq!(e.output_shape(&[&[1, 2, 7, 7, 16], &[7, 7, 16]]).unwrap(), [1, 2, 7, 7, 7]);
    }

    #[test]
    fn refuses_what_does_not_match() {
        let e = Equation::parse("ij,jk->ik").unwrap();
        assert!(e.output_shape(&[&[2, 3], &[4, 5]]).unwrap_err().contains("letter `j`"));
        // A size-1 letter broadcasts.
        assert_eq!(e.output_shape(&[&[2, 1], &[4, 5]]).unwrap(), [2, 5]);
        assert!(e.output_shape(&[&[2, 3, 1], &[3, 5]]).unwrap_err().contains("rank 3"));
        assert!(e.output_shape(&[&[2, 3]]).unwrap_err().contains("1 inputs"));
        assert!(Equation::parse("ij->k").unwrap_err().contains("`k`"));
        assert!(Equation::parse("ij->ii").unwrap_err().contains("twice"));
        assert!(Equation::parse("i1,j").unwrap_err().contains("`1`"));
        assert!(Equation::parse("ij->...i").unwrap_err().contains("ellipsis"));
        let e = Equation::parse("...i->i").unwrap();
        assert!(e.output_shape(&[&[2, 3]]).unwrap_err().contains("drops"));
    }

    use ndarray::{ArrayD, Axis, IxDyn};

    fn array(shape: &[usize], seed: f32) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| ((i as f32 + 1.0) * 0.37 + seed).sin()).collect()).unwrap()
    }

    /// Einsum by definition, on letters only (no ellipsis): every
    /// assignment of the letters, size-1 axes broadcast.
    fn naive(eq: &str, xs: &[&ArrayD<f32>]) -> ArrayD<f32> {
        let e = Equation::parse(eq).unwrap();
        let terms: Vec<Vec<char>> = e.inputs.iter().map(|t| t.letters().collect()).collect();
        let out: Vec<char> = e.output.letters().collect();
        let mut letters: Vec<char> = terms.iter().flatten().copied().collect();
        letters.sort_unstable();
        letters.dedup();
        let size = |c: char| {
            terms
                .iter()
                .zip(xs)
                .filter_map(|(t, x)| t.iter().position(|&d| d == c).map(|i| x.shape()[i]))
                .max()
                .unwrap()
        };
        let sizes: Vec<usize> = letters.iter().map(|&c| size(c)).collect();
        let mut y = ArrayD::<f32>::zeros(IxDyn(&out.iter().map(|&c| size(c)).collect::<Vec<_>>()));
        let total: usize = sizes.iter().product();
        for flat in 0..total {
            let mut idx = vec![0; letters.len()];
            let mut r = flat;
            for (i, &n) in sizes.iter().enumerate().rev() {
                idx[i] = r % n;
                r /= n;
            }
            let at = |c: char| idx[letters.iter().position(|&d| d == c).unwrap()];
            let mut p = 1.0;
            for (t, x) in terms.iter().zip(xs) {
                let ix: Vec<usize> =
                    t.iter().enumerate().map(|(i, &c)| if x.shape()[i] == 1 { 0 } else { at(c) }).collect();
                p *= x[IxDyn(&ix)];
            }
            y[IxDyn(&out.iter().map(|&c| at(c)).collect::<Vec<_>>())] += p;
        }
        y
    }

    /// Runs a [`Lowered`] plan.
    fn run(l: &Lowered, xs: &[&ArrayD<f32>]) -> ArrayD<f32> {
        let prep: Vec<ArrayD<f32>> = l
            .operands
            .iter()
            .zip(xs)
            .map(|(st, x)| {
                let mut a = (*x).clone();
                for &ax in st.sum_axes.iter().rev() {
                    a = a.sum_axis(Axis(ax));
                }
                let a = a.permuted_axes(IxDyn(&st.perm)).as_standard_layout().into_owned();
                a.into_shape_with_order(IxDyn(&st.shape)).unwrap()
            })
            .collect();
        let y = if prep.len() == 1 {
            prep[0].clone()
        } else {
            let (a, b) = (&prep[0], &prep[1]);
            let (nb, m, k, n) = (a.shape()[0], a.shape()[1], a.shape()[2], b.shape()[2]);
            let mut y = ArrayD::<f32>::zeros(IxDyn(&[nb, m, n]));
            for bi in 0..nb {
                for i in 0..m {
                    for j in 0..n {
                        y[[bi, i, j]] = (0..k).map(|q| a[[bi, i, q]] * b[[bi, q, j]]).sum();
                    }
                }
            }
            y
        };
        let y = y.into_shape_with_order(IxDyn(&l.reshape)).unwrap();
        y.permuted_axes(IxDyn(&l.perm)).as_standard_layout().into_owned()
    }

    #[test]
    fn the_lowered_form_computes_the_einsum() {
        // (equation, shapes, the same with the ellipsis spelled out)
        let cases: &[(&str, &[&[usize]], &str)] = &[
            ("bhqd,bhkd->bhqk", &[&[2, 3, 4, 5], &[2, 3, 6, 5]], ""),
            ("byhwc,hkc->byhwk", &[&[1, 2, 3, 4, 5], &[3, 6, 5]], ""),
            ("ij,jk", &[&[3, 4], &[4, 5]], ""),
            ("ij->ji", &[&[3, 4]], ""),
            ("ijk->ki", &[&[3, 4, 5]], ""),
            ("ij,jk->", &[&[3, 4], &[4, 5]], ""),
            ("bij,bjk->ik", &[&[4, 2, 3], &[4, 3, 5]], ""),
            ("bij,bjk->bik", &[&[1, 2, 3], &[4, 3, 5]], ""),
            ("bij,bjk->ik", &[&[1, 2, 3], &[4, 3, 5]], ""),
            ("ij->", &[&[3, 4]], ""),
            // A member letter in front, one operand shared.
            ("abyhwc,hkc->abyhwk", &[&[3, 1, 2, 3, 4, 5], &[3, 6, 5]], ""),
            ("ik,jk->ijk", &[&[2, 3], &[4, 3]], ""),
            ("abc,cd->d", &[&[2, 3, 4], &[4, 5]], ""),
            ("i,i->", &[&[6], &[6]], ""),
            ("i,j->ji", &[&[3], &[4]], ""),
            ("...ij,...jk->...ik", &[&[4, 1, 2, 3], &[5, 3, 6]], "xyij,yjk->xyik"),
            ("b...c,c->...b", &[&[2, 3, 4, 5], &[5]], "bxyc,c->xyb"),
            // Ellipsis dimensions broadcast (size 1 against 5), and are summed.
            ("...ij,...jk->i...k", &[&[1, 2, 3], &[5, 3, 6]], "yij,yjk->iyk"),
            ("...i,...i->...", &[&[5, 1, 3], &[4, 3]], "xyi,yi->xy"),
        ];
        for (k, (eq, shapes, spelled)) in cases.iter().enumerate() {
            let xs: Vec<ArrayD<f32>> = shapes.iter().enumerate().map(|(i, s)| array(s, (k * 3 + i) as f32)).collect();
            let refs: Vec<&ArrayD<f32>> = xs.iter().collect();
            let e = Equation::parse(eq).unwrap();
            let l = e.lowered(shapes).unwrap_or_else(|err| panic!("{eq}: {err}"));
            let got = run(&l, &refs);
            let want = naive(if spelled.is_empty() { eq } else { spelled }, &refs);
            assert_eq!(got.shape(), e.output_shape(shapes).unwrap(), "{eq}");
            assert_eq!(got.shape(), want.shape(), "{eq}");
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "{eq}: max abs {d} ({l:?})");
        }
        let e = Equation::parse("ij,jk,kl->il").unwrap();
        assert!(e.lowered(&[&[2, 3], &[3, 4], &[4, 5]]).unwrap_err().contains("3 operands"));
        let e = Equation::parse("ii->i").unwrap();
        assert!(e.lowered(&[&[3, 3]]).unwrap_err().contains("diagonal"));
    }

    #[test]
    fn a_leading_letter_stacks_the_marked_operands() {
        let e = Equation::parse("byhwc,hkc->byhwk").unwrap();
        let s = e.with_leading(&[true, true]).unwrap();
        assert_eq!(s.text(), "abyhwc,ahkc->abyhwk");
        assert_eq!(s.output_shape(&[&[3, 1, 2, 7, 7, 16], &[3, 7, 7, 16]]).unwrap(), [3, 1, 2, 7, 7, 7]);
        // A shared operand broadcasts over the new axis.
        let s = e.with_leading(&[true, false]).unwrap();
        assert_eq!(s.text(), "abyhwc,hkc->abyhwk");
        assert_eq!(s.output_shape(&[&[3, 1, 2, 7, 7, 16], &[7, 7, 16]]).unwrap(), [3, 1, 2, 7, 7, 7]);
        let e = Equation::parse("...ij,jk->...ik").unwrap();
        assert_eq!(e.with_leading(&[true, true]).unwrap().text(), "a...ij,ajk->a...ik");
    }
}
