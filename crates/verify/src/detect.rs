//! EfficientDet post-processing as effdet does it (`DetBenchPredict`):
//! anchors, top-k over every anchor and class, box decoding, per-class
//! NMS, the 100 best; and the detection metrics fusion is judged by.

use ndarray::ArrayD;

use crate::Tensors;

/// effdet's defaults: levels 3 to 7, 3 octave scales, 3 aspect ratios,
/// anchor scale 4, top 5000 before NMS, IoU 0.5, 100 detections.
pub const MIN_LEVEL: usize = 3;
pub const LEVELS: usize = 5;
pub const NUM_SCALES: usize = 3;
pub const ASPECTS: [(f32, f32); 3] = [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)];
pub const ANCHOR_SCALE: f32 = 4.0;
pub const MAX_DETECTION_POINTS: usize = 5000;
pub const MAX_DETECTIONS: usize = 100;
pub const IOU_THRESHOLD: f32 = 0.5;

/// One detection: x1, y1, x2, y2, score, class (1-based, as effdet).
pub type Detection = [f32; 6];

/// Anchors (y1, x1, y2, x2) for an `h` x `w` image, in the heads' order:
/// level, then row, column, then the 9 (scale, aspect) configurations.
pub fn anchors(h: usize, w: usize) -> Vec<[f32; 4]> {
    let mut out = vec![];
    let (mut fh, mut fw) = (h, w);
    let mut sizes = vec![];
    for _ in 0..MIN_LEVEL + LEVELS {
        sizes.push((fh, fw));
        fh = (fh - 1) / 2 + 1;
        fw = (fw - 1) / 2 + 1;
    }
    for &(lh, lw) in sizes.iter().skip(MIN_LEVEL).take(LEVELS) {
        let (sy, sx) = (h as f64 / lh as f64, w as f64 / lw as f64);
        let ys: Vec<f64> = (0..).map(|i| sy / 2.0 + i as f64 * sy).take_while(|&y| y < h as f64).collect();
        let xs: Vec<f64> = (0..).map(|i| sx / 2.0 + i as f64 * sx).take_while(|&x| x < w as f64).collect();
        for &y in &ys {
            for &x in &xs {
                for octave in 0..NUM_SCALES {
                    for &(ax, ay) in &ASPECTS {
                        let scale = 2f64.powf(octave as f64 / NUM_SCALES as f64);
                        let half_x = ANCHOR_SCALE as f64 * sx * scale * ax as f64 / 2.0;
                        let half_y = ANCHOR_SCALE as f64 * sy * scale * ay as f64 / 2.0;
                        out.push([(y - half_y) as f32, (x - half_x) as f32, (y + half_y) as f32, (x + half_x) as f32]);
                    }
                }
            }
        }
    }
    out
}

fn find<'a>(t: &'a Tensors, name: &str) -> Result<&'a ArrayD<f32>, String> {
    t.iter().find(|(n, _)| n == name).map(|(_, a)| a).ok_or_else(|| format!("output `{name}` missing"))
}

/// Whether `outputs` (names without a member prefix) look like EfficientDet heads.
pub fn is_efficientdet(names: &[&str]) -> bool {
    (0..LEVELS)
        .all(|l| names.contains(&format!("class_out_{l}").as_str()) && names.contains(&format!("box_out_{l}").as_str()))
}

fn iou(a: &[f32], b: &[f32]) -> f32 {
    let (ix1, iy1, ix2, iy2) = (a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3]));
    let inter = (ix2 - ix1).max(0.0) * (iy2 - iy1).max(0.0);
    let area = |r: &[f32]| (r[2] - r[0]) * (r[3] - r[1]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Detections from the heads' outputs (`class_out_0..4`, `box_out_0..4`,
/// batch 1) for an `h` x `w` input, sorted by score; at most 100.
pub fn detect(outputs: &Tensors, h: usize, w: usize) -> Result<Vec<Detection>, String> {
    let mut cls: Vec<f32> = vec![];
    let mut boxes: Vec<[f32; 4]> = vec![];
    let mut classes = 0;
    for l in 0..LEVELS {
        let c = find(outputs, &format!("class_out_{l}"))?;
        let b = find(outputs, &format!("box_out_{l}"))?;
        let (cs, bs) = (c.shape(), b.shape());
        if cs.len() != 4 || bs.len() != 4 || cs[0] != 1 || bs[1] % 4 != 0 {
            return Err(format!("level {l}: unexpected head shapes {cs:?} and {bs:?}"));
        }
        let anchors_per = bs[1] / 4;
        classes = cs[1] / anchors_per;
        let (hh, ww) = (cs[2], cs[3]);
        // [1, A*C, H, W] -> [H, W, A, C] flattened, as effdet's permute + reshape.
        for y in 0..hh {
            for x in 0..ww {
                for a in 0..anchors_per {
                    for k in 0..classes {
                        cls.push(c[[0, a * classes + k, y, x]]);
                    }
                    boxes.push([
                        b[[0, a * 4, y, x]],
                        b[[0, a * 4 + 1, y, x]],
                        b[[0, a * 4 + 2, y, x]],
                        b[[0, a * 4 + 3, y, x]],
                    ]);
                }
            }
        }
    }
    let anchors = anchors(h, w);
    if anchors.len() != boxes.len() {
        return Err(format!("{} anchors for a {h}x{w} input but the heads give {}", anchors.len(), boxes.len()));
    }
    // Top-k logits over every anchor and class (stable on ties: lower index first).
    let mut idx: Vec<usize> = (0..cls.len()).collect();
    let k = MAX_DETECTION_POINTS.min(idx.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| cls[b].total_cmp(&cls[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_by(|&a, &b| cls[b].total_cmp(&cls[a]).then(a.cmp(&b)));
    let mut cand: Vec<Detection> = idx
        .iter()
        .map(|&i| {
            let (ai, ci) = (i / classes, i % classes);
            let an = anchors[ai];
            let [ty, tx, th, tw] = boxes[ai];
            let (yc_a, xc_a) = ((an[0] + an[2]) / 2.0, (an[1] + an[3]) / 2.0);
            let (ha, wa) = (an[2] - an[0], an[3] - an[1]);
            let (bw, bh) = (tw.exp() * wa, th.exp() * ha);
            let (yc, xc) = (ty * ha + yc_a, tx * wa + xc_a);
            let score = 1.0 / (1.0 + (-cls[i]).exp());
            [xc - bw / 2.0, yc - bh / 2.0, xc + bw / 2.0, yc + bh / 2.0, score, ci as f32]
        })
        .collect();
    cand.sort_by(|a, b| b[4].total_cmp(&a[4]));
    // Greedy NMS per class, as torchvision's batched_nms.
    let mut kept: Vec<Detection> = vec![];
    for d in cand {
        if kept.len() == MAX_DETECTIONS {
            break;
        }
        if kept.iter().all(|k| k[5] != d[5] || iou(k, &d) <= IOU_THRESHOLD) {
            kept.push(d);
        }
    }
    for d in &mut kept {
        d[5] += 1.0;
    }
    Ok(kept)
}

/// The overlap two detections need to be compared as the same object (the
/// usual detection-matching threshold).
pub const PAIR_IOU: f32 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct DetectionDiff {
    /// Detections paired (see [`compare`]).
    pub count: usize,
    pub boxes_mse: f64,
    pub scores_mse: f64,
    pub label_accuracy: f64,
    pub mean_iou: f64,
}

impl DetectionDiff {
    /// The worse of two, metric by metric (over members).
    pub fn worst(&self, o: &DetectionDiff) -> DetectionDiff {
        DetectionDiff {
            count: self.count.min(o.count),
            boxes_mse: self.boxes_mse.max(o.boxes_mse),
            scores_mse: self.scores_mse.max(o.scores_mse),
            label_accuracy: self.label_accuracy.min(o.label_accuracy),
            mean_iou: self.mean_iou.min(o.mean_iou),
        }
    }
}

/// How far detections `got` are from `want` (the original study's
/// metrics). Each detection of `got`, best score first, is paired with the
/// unpaired detection of `want` it overlaps most, if that overlap is at
/// least [`PAIR_IOU`]: near-equal scores that two runtimes order differently
/// still pair up, and a detection that only one side has (one that crossed
/// the 100-detection or score cut-off) stays unpaired instead of being
/// compared with an unrelated box. Boxes and scores MSE are over the pairs
/// (`count`); unpaired detections count as wrong labels with zero overlap.
pub fn compare(got: &[Detection], want: &[Detection]) -> DetectionDiff {
    let mut used = vec![false; want.len()];
    let (mut b, mut s, mut l, mut i, mut n) = (0f64, 0f64, 0usize, 0f64, 0usize);
    for g in got {
        let best = (0..want.len())
            .filter(|&j| !used[j] && iou(g, &want[j]) >= PAIR_IOU)
            .max_by(|&x, &y| iou(g, &want[x]).total_cmp(&iou(g, &want[y])).then(y.cmp(&x)));
        let Some(j) = best else { continue };
        used[j] = true;
        let w = &want[j];
        b += (0..4).map(|k| ((g[k] - w[k]) as f64).powi(2)).sum::<f64>() / 4.0;
        s += ((g[4] - w[4]) as f64).powi(2);
        l += usize::from(g[5] == w[5]);
        i += iou(g, w) as f64;
        n += 1;
    }
    let d = n.max(1) as f64;
    let total = got.len().max(want.len()).max(1) as f64;
    DetectionDiff {
        count: n,
        boxes_mse: b / d,
        scores_mse: s / d,
        label_accuracy: l as f64 / total,
        mean_iou: i / total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_only_one_side_has_stays_unpaired() {
        let d = |x: f32, score: f32, class: f32| [x, 0.0, x + 10.0, 10.0, score, class];
        // Same two objects, scores ordered differently: both pair.
        let want = vec![d(0.0, 0.9, 1.0), d(100.0, 0.8, 2.0)];
        let got = vec![d(100.0, 0.85, 2.0), d(0.5, 0.84, 1.0)];
        let r = compare(&got, &want);
        assert_eq!((r.count, r.label_accuracy), (2, 1.0), "{r:?}");
        assert!(r.boxes_mse <= 0.125 && r.mean_iou > 0.9, "{r:?}");
        // The last detection differs (another object crossed the cut-off):
        // it is not compared with the unrelated box, it counts as a miss.
        let got = vec![d(0.5, 0.9, 1.0), d(500.0, 0.8, 2.0)];
        let r = compare(&got, &want);
        assert_eq!(r.count, 1, "{r:?}");
        // Only the pair enters the boxes MSE: x1 and x2 off by 0.5.
        assert_eq!(r.boxes_mse, 2.0 * 0.25 / 4.0, "an unpaired detection must not enter the boxes MSE: {r:?}");
        assert_eq!(r.label_accuracy, 0.5);
        assert!(r.mean_iou < 0.5, "{r:?}");
    }
}
