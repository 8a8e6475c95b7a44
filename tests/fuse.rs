//! `fusec fuse` end to end: the reference 3x D0 set from state_dicts, from
//! ONNX files and mixed, checked against PyTorch's outputs on ONNX Runtime
//! and tract; 2 and 8 members; a frozen backbone computed once; members
//! that cannot be fused; atomic output.

mod common;

use std::path::{Path, PathBuf};

use common::checkpoints::*;
use common::*;
use fusec_verify::io::read_tensors;
use fusec_verify::Tensors;
use sha2::Digest;

fn reference(file: &str) -> PathBuf {
    reference_dir().join(file)
}

/// `fusec fuse MEMBERS -o OUT --explain [extra]`; returns the explain text.
fn fuse(members: &[&Path], out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["fuse"];
    args.extend(members.iter().map(|p| s(p)));
    args.extend_from_slice(&["-o", s(out), "--explain"]);
    args.extend_from_slice(extra);
    String::from_utf8(ok(fusec(&args)).stdout).unwrap()
}

fn run(model: &Path, input: &Path, runtime: &str, extra: &[&str]) -> Tensors {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let mut args = vec!["run", s(model), "--input", s(input), "--runtime", runtime, "-o", s(&out)];
    args.extend_from_slice(extra);
    ok(fusec(&args));
    read_tensors(&out).unwrap()
}

/// The fused model's outputs for each reference member against PyTorch's.
fn assert_reproduces_reference(model: &Path, runtime: &str, members: &[&str]) {
    let got = run(model, &reference("input.safetensors"), runtime, &[]);
    assert_eq!(got.len(), 10 * members.len(), "one set of 10 outputs per member");
    for m in members {
        let want = read_tensors(&reference(&format!("{m}.outputs.safetensors"))).unwrap();
        assert_close(&got, &format!("{m}/"), &want, &format!("{runtime}:"));
    }
}

/// A number from the `--explain` line starting with `label`: the first
/// integer after it.
fn count(explain: &str, label: &str) -> usize {
    let line = explain
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` in:\n{explain}"));
    let rest = &line.trim_start()[label.len()..];
    let digits: String = rest.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number in `{line}`"))
}

fn fused_convs(explain: &str) -> usize {
    let line = explain.lines().find(|l| l.starts_with("fused graph:")).unwrap();
    let before = line.split(" Conv").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The fused graph holds one member's convs plus, per divergence, the
/// other members' own copy of the diverging conv: not N members' worth.
fn assert_fused_conv_count(explain: &str, n: usize) {
    let member_convs: usize = explain
        .lines()
        .find(|l| l.contains(" Conv (folded"))
        .map(|l| l.split(" nodes, ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap())
        .unwrap_or_else(|| panic!("no member line in:\n{explain}"));
    let diverging_convs = explain.lines().filter(|l| l.contains("(Conv) -> ")).count();
    assert_eq!(diverging_convs, 5, "the 5 class-head predict convs diverge:\n{explain}");
    assert_eq!(fused_convs(explain), member_convs + (n - 1) * diverging_convs, "{explain}");
    assert!(fused_convs(explain) < 2 * member_convs, "{explain}");
}

fn sha256(p: &Path) -> String {
    sha2::Sha256::digest(std::fs::read(p).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn three_state_dicts_fuse_and_reproduce_every_member_on_ort_and_tract() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super.onnx");
    let members: Vec<PathBuf> = MEMBERS.iter().map(|m| reference(&format!("{m}.safetensors"))).collect();
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    let explain = fuse(&refs, &out, &["--lowering", "grouped"]);
    assert_fused_conv_count(&explain, 3);
    assert_eq!(count(&explain, "grouped (stacked):"), count(&explain, "aligned node groups:") - 5, "{explain}");
    // The 24- and 40-channel stages and the squeeze-excite convs, padded
    // to whole blocks of 16 so that their grouped convs stay blocked.
    for m in MEMBERS {
        let line = format!("  {m}: 16 Conv padded with zero filters to a multiple of 16 channels\n");
        assert!(explain.contains(&line), "{explain}");
    }
    assert_reproduces_reference(&out, "ort", &MEMBERS);
    assert_reproduces_reference(&out, "tract", &MEMBERS);
    // --channel-block 0 pads nothing: the same outputs from a smaller file.
    let unpadded = dir.path().join("unpadded.onnx");
    let explain0 = fuse(&refs, &unpadded, &["--lowering", "grouped", "--channel-block", "0"]);
    assert!(!explain0.contains("padded"), "{explain0}");
    assert_fused_conv_count(&explain0, 3);
    assert_reproduces_reference(&unpadded, "ort", &MEMBERS);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&unpadded) < size(&out), "padding adds zero filters");
    // A block past 256 is refused before anything is read.
    let huge = fusec(&["fuse", s(refs[0]), s(refs[1]), "-o", s(&dir.path().join("x.onnx")), "--channel-block", "4096"]);
    assert_eq!(huge.status.code(), Some(2), "{}", String::from_utf8_lossy(&huge.stderr));
    assert!(
        String::from_utf8_lossy(&huge.stderr).contains("--channel-block"),
        "{}",
        String::from_utf8_lossy(&huge.stderr)
    );

    let info = String::from_utf8(ok(fusec(&["inspect", s(&out)])).stdout).unwrap();
    assert!(info.contains("  image f32[1,3,512,512]\n"), "{info}");
    assert!(info.contains("  coco/class_out_0 f32[1,810,64,64]\n"), "{info}");
    assert!(info.contains("  aquarium/class_out_0 f32[1,63,64,64]\n"), "{info}");
    assert!(info.contains("  vehicles/box_out_4 f32[1,36,4,4]\n"), "{info}");
    assert!(info.contains("metadata: fusec.members = coco,aquarium,vehicles\n"), "{info}");
    assert!(info.contains(&format!("metadata: fusec.version = {}\n", env!("CARGO_PKG_VERSION"))), "{info}");
    for (i, p) in members.iter().enumerate() {
        assert!(info.contains(&format!("metadata: fusec.member.{i}.sha256 = {}\n", sha256(p))), "{info}");
    }
    assert!(!info.contains("BatchNormalization"), "BatchNorm is folded by default:\n{info}");
}

#[test]
fn three_onnx_files_fuse_and_reproduce_every_member_on_ort_and_tract() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super.onnx");
    let members: Vec<PathBuf> = MEMBERS.iter().map(|m| reference(&format!("{m}.onnx"))).collect();
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    let explain = fuse(&refs, &out, &["--lowering", "grouped"]);
    assert_fused_conv_count(&explain, 3);
    assert_reproduces_reference(&out, "ort", &MEMBERS);
    assert_reproduces_reference(&out, "tract", &MEMBERS);
}

/// torchvision-style members from torch's newer exporter: DenseNet's
/// AveragePool, and a member whose zero biases the exporter dropped beside
/// members that keep theirs. They fuse, and each member's outputs come back
/// on ONNX Runtime and tract.
#[test]
fn average_pools_and_dropped_zero_biases_fuse_and_verify() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.onnx", &common::models::pooled_classifier(0.0, 3, true));
    let b = write(&dir, "b.onnx", &common::models::pooled_classifier(1.0, 5, false));
    let c = write(&dir, "c.onnx", &common::models::pooled_classifier(2.0, 2, true));
    for lowering in ["grouped", "separate"] {
        let out = dir.path().join(format!("{lowering}.onnx"));
        let explain = fuse(&[&a, &b, &c], &out, &["--lowering", lowering]);
        assert!(explain.contains("b: zero bias made explicit on `Conv_0` and 1 more"), "{explain}");
        assert_eq!(count(&explain, "per member after divergence:"), 1, "only the class Gemm differs:\n{explain}");
        for runtime in ["ort", "tract"] {
            let text = verify_ok(&out, &[&a, &b, &c], &["--runtime", runtime, "--runs", "0"]);
            assert!(text.contains("equivalence: ok (6 outputs compared"), "{lowering} {runtime}:\n{text}");
        }
    }
}

/// Members with the ops of families beyond the first ten (ConvNeXt-V2's
/// ReduceL2, PoolFormer's InstanceNormalization, NFNet's training-mode
/// BatchNormalization on weights, timm's "same" padding computed through
/// Ceil, XCiT's and EdgeNeXt's Sin, Cos, Tile and CumSum, ...) import,
/// fuse with each lowering and answer as each member does on ONNX Runtime;
/// the constant parts are folded away.
#[test]
fn ops_of_newer_families_fuse_and_verify() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.onnx", &common::models::newer_families_member(0.0, 3));
    let b = write(&dir, "b.onnx", &common::models::newer_families_member(1.0, 5));
    let c = write(&dir, "c.onnx", &common::models::newer_families_member(2.0, 2));
    for lowering in ["grouped", "separate", "regions"] {
        let out = dir.path().join(format!("{lowering}.onnx"));
        let explain = fuse(&[&a, &b, &c], &out, &["--lowering", lowering]);
        assert_eq!(count(&explain, "per member after divergence:"), 1, "only the class Gemm differs:\n{explain}");
        let model = fusec_frontends::onnx::load(&out).unwrap();
        let text = fuse_ir::text::to_text(&model).unwrap();
        for folded in ["Ceil(", "BatchNormalization(", "Cast("] {
            assert!(!text.contains(folded), "{lowering}: {folded} left:\n{text}");
        }
        // The constant Tile and CumSum are folded; each member's run-time one stays.
        for per_member in ["Tile(", "CumSum("] {
            assert_eq!(text.matches(per_member).count(), 3, "{lowering}: {per_member}\n{text}");
        }
        for kept in ["ReduceL2(", "InstanceNormalization(", "Reciprocal(", "Sin(", "Cos("] {
            assert!(text.contains(kept), "{lowering}: no {kept}:\n{text}");
        }
        if lowering == "grouped" {
            assert_eq!(text.matches("InstanceNormalization(").count(), 1, "one for the three members:\n{text}");
        }
        let text = verify_ok(&out, &[&a, &b, &c], &["--runtime", "ort", "--runs", "0"]);
        assert!(text.contains("equivalence: ok (6 outputs compared"), "{lowering}:\n{text}");
    }
}

/// Sequencer2D's LSTM: members with their own LSTM weights fuse (the
/// LSTMs stay per member under every lowering) and answer as they do alone
/// on ONNX Runtime, in both directions and one. (Core ML: tests/coreml.rs.)
#[test]
fn lstm_members_fuse_and_verify() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    for direction in ["bidirectional", "forward"] {
        let member = |seed: f32, classes: i64| common::models::lstm_member(seed, classes, direction);
        let a = write(&dir, &format!("{direction}-a.onnx"), &member(0.0, 3));
        let b = write(&dir, &format!("{direction}-b.onnx"), &member(1.0, 5));
        let c = write(&dir, &format!("{direction}-c.onnx"), &member(2.0, 2));
        for lowering in ["grouped", "separate", "regions"] {
            let out = dir.path().join(format!("{direction}-{lowering}.onnx"));
            fuse(&[&a, &b, &c], &out, &["--lowering", lowering]);
            let model = fusec_frontends::onnx::load(&out).unwrap();
            let text = fuse_ir::text::to_text(&model).unwrap();
            assert_eq!(text.matches("LSTM(").count(), 3, "{lowering}: one LSTM a member\n{text}");
            assert!(text.contains(&format!("{{hidden=6, direction={direction}}}")), "{lowering}:\n{text}");
            let text = verify_ok(&out, &[&a, &b, &c], &["--runtime", "ort", "--runs", "0"]);
            assert!(text.contains("equivalence: ok (6 outputs compared"), "{lowering}:\n{text}");
        }
    }
}

#[test]
fn ops_of_more_families_fuse_and_verify() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    // Each member its own relative-position table, then one table shared
    // bit for bit (the stacked einsum reads it as it is).
    for (tables, seeds) in [("own", [0.0, 1.0, 2.0]), ("shared", [0.0; 3])] {
        let a = write(&dir, &format!("{tables}-a.onnx"), &common::models::more_families_member(0.0, seeds[0], 3));
        let b = write(&dir, &format!("{tables}-b.onnx"), &common::models::more_families_member(1.0, seeds[1], 5));
        let c = write(&dir, &format!("{tables}-c.onnx"), &common::models::more_families_member(2.0, seeds[2], 2));
        for lowering in ["grouped", "separate", "regions"] {
            let out = dir.path().join(format!("{tables}-{lowering}.onnx"));
            fuse(&[&a, &b, &c], &out, &["--lowering", lowering]);
            let model = fusec_frontends::onnx::load(&out).unwrap();
            let text = fuse_ir::text::to_text(&model).unwrap();
            let ctx = format!("{tables} tables, {lowering}\n{text}");
            if lowering == "grouped" {
                // Stacked on a member axis: a member letter in front of the
                // stacked operands' terms and of the output's.
                assert_eq!(text.matches("Einsum(").count(), 3, "{ctx}");
                let rel = if tables == "own" { "abyhwc,ahkc->abyhwk" } else { "abyhwc,hkc->abyhwk" };
                for eq in [rel, "abhdq,abhdk->abhqk", "a...q,aqe->a...e"] {
                    assert!(text.contains(&format!("{{equation={eq}}}")), "no {eq}: {ctx}");
                }
            } else if lowering == "separate" {
                for eq in ["byhwc,hkc->byhwk", "bhdq,bhdk->bhqk", "...q,qe->...e"] {
                    assert_eq!(text.matches(&format!("{{equation={eq}}}")).count(), 3, "{eq}: {ctx}");
                }
            }
            for op in ["ReduceMax(", "ReduceMin(", "ScatterND(", "LeakyRelu("] {
                assert!(text.contains(op), "no {op}: {ctx}");
            }
            let text = verify_ok(&out, &[&a, &b, &c], &["--runtime", "ort", "--runs", "0"]);
            assert!(text.contains("equivalence: ok (6 outputs compared"), "{tables} tables, {lowering}:\n{text}");
        }
    }
}

/// Text encoders as `transformers` 5 exports them (RoBERTa, ELECTRA,
/// DistilBERT, DeBERTa, ALBERT, MPNet: `common::models::text_encoder_member`)
/// import, fuse under each lowering and answer like their members on both
/// runtimes. The constant `GatherElements` folds at import; the run-time
/// one reads only the shared input and a buffer every member has bit for
/// bit, so the fused model computes it once.
#[test]
fn text_encoders_as_transformers_5_exports_them_fuse_and_verify() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<PathBuf> = [(0.0, 3), (1.0, 5), (2.0, 2)]
        .iter()
        .enumerate()
        .map(|(i, &(seed, classes))| {
            write(&dir, &format!("m{i}.onnx"), &common::models::text_encoder_member(seed, classes))
        })
        .collect();
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    for lowering in ["grouped", "separate", "regions"] {
        let out = dir.path().join(format!("{lowering}.onnx"));
        fuse(&refs, &out, &["--lowering", lowering]);
        let text = fuse_ir::text::to_text(&fusec_frontends::onnx::load(&out).unwrap()).unwrap();
        assert_eq!(text.matches("GatherElements(").count(), 1, "{lowering}:\n{text}");
        for op in ["IsNaN(", "Where(", "Not(", "Min(", "Max(", "Pow("] {
            assert!(text.contains(op), "{lowering}: no {op}\n{text}");
        }
        for runtime in ["ort", "tract"] {
            let report = verify_ok(&out, &refs, &["--runtime", runtime, "--runs", "0"]);
            assert!(report.contains("equivalence: ok (6 outputs compared"), "{lowering} on {runtime}:\n{report}");
        }
    }
}

#[test]
fn onnx_files_and_state_dicts_fuse_together() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super.onnx");
    let (a, b, c) = (reference("coco.onnx"), reference("aquarium.safetensors"), reference("vehicles.onnx"));
    let explain = fuse(&[&a, &b, &c], &out, &["--lowering", "grouped"]);
    assert_fused_conv_count(&explain, 3);
    assert_reproduces_reference(&out, "ort", &MEMBERS);
}

#[test]
fn two_members_fuse_with_batchnorm_kept() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pair.onnx");
    let (a, b) = (reference("coco.safetensors"), reference("vehicles.safetensors"));
    let explain = fuse(&[&a, &b], &out, &["--keep-bn", "--lowering", "grouped"]);
    assert_fused_conv_count(&explain, 2);
    let info = String::from_utf8(ok(fusec(&["inspect", s(&out)])).stdout).unwrap();
    assert!(info.contains("BatchNormalization"), "--keep-bn keeps (grouped) BatchNormalization:\n{info}");
    assert_reproduces_reference(&out, "ort", &["coco", "vehicles"]);
}

#[test]
fn separate_lowering_keeps_members_apart_and_stays_exact() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("side.onnx");
    let (a, b) = (reference("aquarium.onnx"), reference("vehicles.onnx"));
    let explain = fuse(&[&a, &b], &out, &["--lowering", "separate"]);
    assert_eq!(count(&explain, "grouped (stacked):"), 0, "{explain}");
    assert_eq!(fused_convs(&explain), 2 * 214, "{explain}");
    assert_reproduces_reference(&out, "ort", &["aquarium", "vehicles"]);
}

/// Without a lowering chosen (flags, a calibration file or --tune), fuse
/// says the default was not measured for these members and what measures
/// it; with one chosen, even the default's own values, it says nothing.
#[test]
fn the_default_lowering_is_said_to_be_unmeasured_and_a_chosen_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super.onnx");
    let (a, b) = (reference("aquarium.onnx"), reference("vehicles.onnx"));
    let note = "lowering: the default, regions from 0.25 (the fastest on EfficientDet-D0 with ONNX Runtime on a 2-core CPU), not measured for these members: --tune measures plans for them where they will run";
    let stderr = |extra: &[&str]| {
        let mut args = vec!["fuse", s(&a), s(&b), "-o", s(&out)];
        args.extend_from_slice(extra);
        String::from_utf8(ok(fusec(&args)).stderr).unwrap()
    };
    let default = stderr(&[]);
    assert!(default.lines().any(|l| l == note), "{default}");
    for chosen in [&["--lowering", "regions"][..], &["--group-from", "0.25"], &["--lowering", "separate"]] {
        let said = stderr(chosen);
        assert!(!said.contains("not measured"), "{chosen:?}: {said}");
        assert!(said.contains("wrote "), "{chosen:?}: {said}");
    }
}

/// `--member-subgraphs`: each member's layers a one-step Scan of its own,
/// which ONNX Runtime and tract run to the members' outputs, and which
/// `verify` reads back.
#[test]
fn member_subgraphs_run_each_member_apart_and_stay_exact() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("subgraphs.onnx");
    let (a, b) = (reference("aquarium.onnx"), reference("vehicles.onnx"));
    let explain = fuse(&[&a, &b], &out, &["--lowering", "separate", "--member-subgraphs"]);
    assert_eq!(fused_convs(&explain), 2 * 214, "{explain}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.windows(6).filter(|w| w == b"\x22\x04Scan").count(), 2, "two Scan nodes (op_type field)");
    assert_reproduces_reference(&out, "ort", &["aquarium", "vehicles"]);
    assert_reproduces_reference(&out, "tract", &["aquarium", "vehicles"]);
    assert!(verify_ok(&out, &[&a, &b], &["--runs", "0"]).contains("equivalence: ok"));
    // With grouping after a per-member start (what `--tune`'s
    // `costs-subgraphs` writes): each member's start is a Scan, the rest
    // grouped channels.
    let regions = dir.path().join("regions-subgraphs.onnx");
    let explain = fuse(&[&a, &b], &regions, &["--lowering", "regions", "--group-from", "0.25", "--member-subgraphs"]);
    assert!(fused_convs(&explain) < 2 * 214, "{explain}");
    let bytes = std::fs::read(&regions).unwrap();
    assert_eq!(bytes.windows(6).filter(|w| w == b"\x22\x04Scan").count(), 2, "two Scan nodes (op_type field)");
    assert_reproduces_reference(&regions, "ort", &["aquarium", "vehicles"]);
    assert_reproduces_reference(&regions, "tract", &["aquarium", "vehicles"]);
    // Core ML has no such form: the package is flat, and fuse says so.
    let pkg = dir.path().join("subgraphs.mlpackage");
    let res =
        ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg), "--lowering", "separate", "--member-subgraphs", "--json"]));
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    assert!(j["warnings"].to_string().contains("the Core ML package is written as one flat program"), "{j}");
}

/// Eight narrow members with their own weights and class counts: the fused
/// model gives each member's outputs as the member alone does.
#[test]
fn eight_members_fuse_and_match_each_member_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = vec![];
    for k in 0..8u64 {
        let p = dir.path().join(format!("m{k}.safetensors"));
        write_checkpoint_seeded(&p, &Spec::small(16, 2, 2, 2 + k as usize).tensors(), None, 100 + k);
        members.push(p);
    }
    let input = image(&dir, 128);
    let out = dir.path().join("eight.onnx");
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    let explain = fuse(&refs, &out, &["--image-size", "128"]);
    assert_eq!(count(&explain, "members:"), 8, "{explain}");
    assert_eq!(count(&explain, "shared (computed once):"), 0, "{explain}");
    let fused = run(&out, &input, "tract", &[]);
    assert_eq!(fused.len(), 80);
    for (k, m) in members.iter().enumerate() {
        let alone = run(m, &input, "tract", &["--image-size", "128"]);
        assert_close(&fused, &format!("m{k}/"), &alone, &format!("member m{k}"));
    }
}

/// Copies `member`'s checkpoint with every `backbone.*` tensor taken from `base`.
fn with_frozen_backbone(base: &Path, member: &Path, out: &Path) {
    let (bb, mb) = (std::fs::read(base).unwrap(), std::fs::read(member).unwrap());
    let (bt, mt) =
        (safetensors::SafeTensors::deserialize(&bb).unwrap(), safetensors::SafeTensors::deserialize(&mb).unwrap());
    let mut names: Vec<String> = mt.names().into_iter().map(String::from).collect();
    names.sort();
    let views: Vec<(String, safetensors::tensor::TensorView)> = names
        .iter()
        .map(|n| (n.clone(), if n.starts_with("backbone.") { bt.tensor(n).unwrap() } else { mt.tensor(n).unwrap() }))
        .collect();
    std::fs::write(out, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn frozen_backbone_is_computed_once() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let coco = reference("coco.safetensors");
    let mut members = vec![coco.clone()];
    for m in ["aquarium", "vehicles"] {
        let p = dir.path().join(format!("{m}.safetensors"));
        with_frozen_backbone(&coco, &reference(&format!("{m}.safetensors")), &p);
        members.push(p);
    }
    let out = dir.path().join("frozen.onnx");
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    let explain = fuse(&refs, &out, &["--lowering", "grouped"]);
    // Every backbone conv (one 4-D `backbone.*weight` each) is computed once.
    let bytes = std::fs::read(&coco).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let backbone_convs = st
        .tensors()
        .iter()
        .filter(|(n, t)| n.starts_with("backbone.") && n.ends_with(".weight") && t.shape().len() == 4)
        .count();
    // conv_stem, 4 in block 0 (dw, SE reduce/expand, pw), 5 in each of the other 15.
    assert_eq!(backbone_convs, 1 + 4 + 15 * 5);
    let shared_convs: usize = explain
        .lines()
        .find(|l| l.contains("shared (computed once):"))
        .and_then(|l| l.split('(').nth(2))
        .and_then(|x| x.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap();
    assert_eq!(shared_convs, backbone_convs, "{explain}");
    // One backbone plus three stacked BiFPN/heads: the rest are grouped.
    assert_eq!(fused_convs(&explain), 214 + 2 * 5, "{explain}");
    let input = reference("input.safetensors");
    let fused = run(&out, &input, "ort", &[]);
    for (m, p) in MEMBERS.iter().zip(&members) {
        let alone = run(p, &input, "ort", &[]);
        assert_close(&fused, &format!("{m}/"), &alone, m);
    }
    let want = read_tensors(&reference("coco.outputs.safetensors")).unwrap();
    assert_close(&fused, "coco/", &want, "coco vs PyTorch");
}

#[test]
fn identical_members_fuse_with_a_warning() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("twice.onnx");
    let a = reference("aquarium.onnx");
    let res = ok(fusec(&["fuse", s(&a), s(&a), "-o", s(&out)]));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("warning: ") && err.contains("is identical to"), "{err}");
    let got = run(&out, &reference("input.safetensors"), "ort", &[]);
    let want = read_tensors(&reference("aquarium.outputs.safetensors")).unwrap();
    assert_close(&got, "aquarium/", &want, "first copy");
    assert_close(&got, "aquarium_2/", &want, "second copy");
}

/// A fuse that fails leaves an existing output untouched and no temporary file.
fn assert_fuse_rejected(members: &[&Path], extra: &[&str], needles: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super.onnx");
    std::fs::write(&out, b"previous good model").unwrap();
    let mut args = vec!["fuse"];
    args.extend(members.iter().map(|p| s(p)));
    args.extend_from_slice(&["-o", s(&out)]);
    args.extend_from_slice(extra);
    let line = last_error_line(&fusec(&args), 2);
    for n in needles {
        assert!(line.contains(n), "`{n}` not in: {line}");
    }
    assert_eq!(std::fs::read(&out).unwrap(), b"previous good model");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left behind");
    line
}

#[test]
fn different_input_sizes_cannot_fuse() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(&dir, "small.safetensors", &Spec::small(16, 2, 2, 5));
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    ok(fusec(&["convert", s(&ck), "--image-size", "128", "-o", s(&a)]));
    ok(fusec(&["convert", s(&ck), "--image-size", "256", "-o", s(&b)]));
    assert_fuse_rejected(
        &[&a, &b],
        &[],
        &["cannot fuse", "input `image`", "f32[1,3,128,128]", "f32[1,3,256,256]", "a", "b"],
    );
}

#[test]
fn different_architectures_cannot_fuse_and_the_first_divergence_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(&dir, "two_cells.safetensors", &Spec::small(16, 2, 2, 5));
    let b = checkpoint(&dir, "three_cells.safetensors", &Spec::small(16, 3, 2, 5));
    let line =
        assert_fuse_rejected(&[&a, &b], &["--image-size", "128"], &["cannot fuse", "differ in structure", "node `"]);
    assert!(line.contains("two_cells") && line.contains("three_cells"), "{line}");
    // Wider BiFPN: the same dataflow, but the first BiFPN conv differs in shape.
    let c = checkpoint(&dir, "wide.safetensors", &Spec::small(24, 2, 2, 5));
    assert_fuse_rejected(&[&a, &c], &["--image-size", "128"], &["cannot fuse", "first divergence", "fpn."]);
}

#[test]
fn different_input_dtypes_cannot_fuse() {
    use fusec_exporters::onnx_builder::{attr_int, OnnxBuilder};
    let dir = tempfile::tempdir().unwrap();
    let f32_model =
        OnnxBuilder::new(17).input("x", &[1, 4]).output("y", &[1, 4]).node("Relu", &["x"], &["y"], vec![]).build();
    let f16_model = OnnxBuilder::new(17)
        .input_typed("x", fuse_ir::DType::F16, &[1, 4])
        .output("y", &[1, 4])
        .node("Cast", &["x"], &["y"], vec![attr_int("to", 1)])
        .build();
    let a = write(&dir, "a.onnx", &f32_model);
    let b = write(&dir, "b.onnx", &f16_model);
    assert_fuse_rejected(&[&a, &b], &[], &["cannot fuse", "input `x`", "f32[1,4]", "f16[1,4]"]);
}

#[test]
fn fuse_needs_two_members_and_an_onnx_output() {
    let coco = reference("coco.onnx");
    let out = fusec(&["fuse", s(&coco), "-o", "/tmp/never.onnx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!Path::new("/tmp/never.onnx").exists());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("super.bin");
    let line = one_error_line(&fusec(&["fuse", s(&coco), s(&coco), "-o", s(&bad)]), 2);
    assert!(line.contains("super.bin") && line.contains(".onnx"), "{line}");
    assert!(!bad.exists());
}

/// Two narrow members fused; returns (dir, members, fused model, input).
fn small_fused() -> (tempfile::TempDir, Vec<PathBuf>, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut members = vec![];
    for (k, classes) in [3usize, 6].iter().enumerate() {
        let p = dir.path().join(format!("s{k}.safetensors"));
        write_checkpoint_seeded(&p, &Spec::small(16, 2, 2, *classes).tensors(), None, 7 + k as u64);
        members.push(p);
    }
    let input = image(&dir, 128);
    let out = dir.path().join("small.onnx");
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    fuse(&refs, &out, &["--image-size", "128"]);
    (dir, members, out, input)
}

fn verify_args<'a>(model: &'a Path, members: &'a [PathBuf], input: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["verify", s(model), "--members"];
    args.extend(members.iter().map(|p| s(p)));
    args.extend_from_slice(&[
        "--image-size",
        "128",
        "--input",
        s(input),
        "--runtime",
        "tract",
        "--runs",
        "2",
        "--warmup",
        "1",
    ]);
    args
}

#[test]
fn verify_reports_equivalence_and_speed() {
    let (_dir, members, model, input) = small_fused();
    let out = ok(fusec(&verify_args(&model, &members, &input)));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("equivalence: ok (20 outputs compared"), "{text}");
    assert!(text.contains("| members one after another |") && text.contains("| fused |"), "{text}");
    assert!(text.contains("s1           class_out_0"), "{text}");
    // Default: the rounds split among up to 4 sessions of each model made
    // afresh (here 2, one per round); one session when asked.
    assert!(text.contains("2 timed rounds, interleaved, across 2 sessions of each model made afresh"), "{text}");
    let mut one = verify_args(&model, &members, &input);
    one.extend_from_slice(&["--sessions", "1", "--json"]);
    let res = ok(fusec(&one));
    assert!(String::from_utf8(res.stdout).unwrap().contains("1 warm-up + 2 timed rounds, interleaved\n"));
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    assert_eq!(j["report"]["speed"]["sessions"], 1, "{j}");
    assert!(j["report"]["speed"]["rows"].as_array().unwrap().iter().all(|r| r["runs"] == 2), "{j}");
    let res = fusec(&[&verify_args(&model, &members, &input)[..], &["--sessions", "0"]].concat());
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("--sessions"));
}

#[test]
fn verify_tables_say_which_input_a_row_is() {
    let (_dir, members, model, _input) = small_fused();
    let text =
        verify_ok(&model, &members, &["--image-size", "128", "--images", "2", "--runtime", "tract", "--runs", "0"]);
    assert!(text.contains("input  member"), "{text}");
    for k in ["1", "2"] {
        let rows = text.lines().filter(|l| l.split_whitespace().next() == Some(k) && l.contains("class_out_0")).count();
        assert_eq!(rows, members.len(), "input {k}: one class_out_0 row per member\n{text}");
    }
}

#[test]
fn verify_fails_on_a_fused_model_with_one_corrupted_weight() {
    let (dir, members, model, input) = small_fused();
    // Scale one weight of the fused model, the stacked box-head conv, by 1.05.
    let mut g = fusec_frontends::onnx::load(&model).unwrap();
    let (id, t) = g
        .weights()
        .find(|(_, v, t)| v.name.starts_with("box_net.predict.conv_pw.weight") && t.ty().rank() == 4)
        .map(|(id, _, t)| (id, t.clone()))
        .expect("the box head's weight");
    let scaled: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|x| x * 1.05).collect();
    g.value_mut(id).def = fuse_ir::ValueDef::Weight(fuse_ir::Tensor::from_f32(t.ty().shape.clone(), &scaled).unwrap());
    let bad = dir.path().join("corrupt.onnx");
    std::fs::write(&bad, fusec_exporters::onnx::export(&g).unwrap()).unwrap();
    let res = fusec(&verify_args(&bad, &members, &input));
    let line = last_error_line(&res, 1);
    assert!(line.contains("differ beyond atol"), "{line}");
    let text = String::from_utf8(res.stdout).unwrap();
    assert!(text.contains("equivalence: FAILED"), "{text}");
}

#[test]
fn verify_needs_the_members_it_was_fused_from() {
    let (_dir, members, model, input) = small_fused();
    let other = vec![members[0].clone(), reference("coco.onnx")];
    let res = fusec(&verify_args(&model, &other, &input));
    let line = last_error_line(&res, 2);
    assert!(line.contains("no output `coco/class_out_0`"), "{line}");
}

#[test]
fn bench_compares_every_lowering_against_the_members_in_one_run() {
    let (dir, members, _model, input) = small_fused();
    let (json, md, cal) =
        (dir.path().join("bench.json"), dir.path().join("bench.md"), dir.path().join("lowering.json"));
    let res = ok(fusec(&[
        "bench",
        s(&members[0]),
        s(&members[1]),
        "--image-size",
        "128",
        "--input",
        s(&input),
        "--runtime",
        "tract",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--json-out",
        s(&json),
        "--markdown-out",
        s(&md),
        "--calibrate",
        s(&cal),
    ]));
    let text = String::from_utf8(res.stdout).unwrap();
    for row in [
        "| members one after another |",
        "| members one after another, canonicalized (not fused) |",
        "| fused, grouped |",
        "| fused, grouped, channels unpadded |",
        "| fused, separate |",
        "| fused, separate, member subgraphs |",
        "| fused, grouped, BatchNorm kept |",
        "| fused, regions from 0.5 |",
        "| fused, grouped, depthwise split |",
        "| fused, grouped, pointwise split |",
        "| fused, default lowering, fp16 weights |",
    ] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
    assert_eq!(std::fs::read_to_string(&md).unwrap(), text);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 17, "the baseline, the canonicalized members and 15 fused configurations");
    assert_eq!(rows[1]["config"], "members one after another, canonicalized (not fused)");
    assert!(rows[0]["speedup_p50_interval"].is_null(), "the baseline has no interval");
    for r in &rows[1..] {
        let ci = r["speedup_p50_interval"].as_array().unwrap_or_else(|| panic!("{r}"));
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(0.0 < lo && lo <= hi, "{r}");
    }
    assert!(text.contains("| speedup (p50) | 95% interval |"), "{text}");
    // The 2 timed rounds split among 2 sessions of each model made afresh
    // (4 asked, at most one per round), every row timed in both.
    assert_eq!(j["sessions"], 2, "{j}");
    assert!(text.contains("2 timed rounds, interleaved, across 2 sessions of each model made afresh"), "{text}");
    assert!(rows.iter().all(|r| r["runs"] == 2), "{j}");
    assert!(text.contains("the gain of fusion itself"), "{text}");
    for r in rows {
        assert!(r["p50_ms"].as_f64().unwrap() > 0.0 && r["p99_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
        // fp32 configurations are exact to float rounding; fp16 weights are not.
        let fp16 = r["config"].as_str().unwrap().contains("fp16");
        let max_abs = r["max_abs"].as_f64().unwrap();
        if fp16 {
            assert!(max_abs > 0.0 && r["detections"]["label_accuracy"] == 1.0, "{r}");
        } else {
            assert!(max_abs <= MAX_ABS, "{r}");
        }
    }

    // --calibrate: the fastest fp32 row, as fuse options.
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cal).unwrap()).unwrap();
    let best = rows
        .iter()
        .skip(2)
        .filter(|r| !r["config"].as_str().unwrap().contains("fp16") && r["same_as"].is_null())
        .max_by(|a, b| a["speedup_p50"].as_f64().unwrap().total_cmp(&b["speedup_p50"].as_f64().unwrap()))
        .unwrap();
    assert_eq!(c["config"], best["config"], "{c}");
    // No linear layer here: the linear split is the grouped model, timed once.
    let lin = rows.iter().find(|r| r["config"] == "fused, grouped, linear split").unwrap();
    assert_eq!(lin["same_as"], "fused, grouped", "{lin}");
    assert_eq!(c["speedup_p50"], best["speedup_p50"], "{c}");

    // fuse --calibration uses it: the same bytes as the same options given as flags.
    let mut regions = c.clone();
    regions["lowering"] = "regions".into();
    regions["group_from"] = 0.5.into();
    regions["keep_bn"] = true.into();
    regions["split_depthwise"] = false.into();
    regions["split_pointwise"] = false.into();
    // Whatever row was fastest (its linear split, member subgraphs): the
    // flags below ask for neither.
    regions["split_linear"] = false.into();
    regions["member_axis"] = true.into();
    regions["member_subgraphs"] = false.into();
    regions["channel_block"] = 16.into();
    std::fs::write(&cal, serde_json::to_vec(&regions).unwrap()).unwrap();
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    let base = ["fuse", s(&members[0]), s(&members[1]), "--image-size", "128", "-o"];
    let with = |out: &Path, extra: &[&str]| {
        let mut args = base.to_vec();
        args.push(s(out));
        args.extend_from_slice(extra);
        ok(fusec(&args));
        std::fs::read(out).unwrap()
    };
    assert!(
        with(&a, &["--calibration", s(&cal)])
            == with(&b, &["--lowering", "regions", "--group-from", "0.5", "--keep-bn"]),
        "--calibration and the same flags give different models"
    );
    // A calibration measured unpadded (`fused, grouped, channels unpadded`)
    // fuses unpadded; a file from before padding existed pads.
    let mut unpadded = regions.clone();
    unpadded["channel_block"] = 0.into();
    std::fs::write(&cal, serde_json::to_vec(&unpadded).unwrap()).unwrap();
    assert!(
        with(&a, &["--calibration", s(&cal)])
            == with(&b, &["--lowering", "regions", "--group-from", "0.5", "--keep-bn", "--channel-block", "0"]),
        "--calibration with channel_block 0 and --channel-block 0 give different models"
    );
    let mut old = regions.clone();
    old.as_object_mut().unwrap().remove("channel_block");
    std::fs::write(&cal, serde_json::to_vec(&old).unwrap()).unwrap();
    assert!(
        with(&a, &["--calibration", s(&cal)])
            == with(&b, &["--lowering", "regions", "--group-from", "0.5", "--keep-bn"]),
        "a calibration file without channel_block does not pad as the default does"
    );
    // Conflicting flags and a broken file are input errors.
    let mut args = base.to_vec();
    args.extend_from_slice(&[s(&a), "--calibration", s(&cal), "--lowering", "grouped"]);
    assert_eq!(fusec(&args).status.code(), Some(2));
    std::fs::write(&cal, b"{\"lowering\": 3}").unwrap();
    let mut args = base.to_vec();
    args.extend_from_slice(&[s(&a), "--calibration", s(&cal)]);
    let line = last_error_line(&fusec(&args), 2);
    assert!(line.contains(s(&cal)) && line.contains("not a fusec bench --calibrate file"), "{line}");
}

#[test]
fn verify_on_the_reference_set_reports_detection_metrics() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super.onnx");
    let members: Vec<PathBuf> = MEMBERS.iter().map(|m| reference(&format!("{m}.onnx"))).collect();
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    fuse(&refs, &out, &[]);
    let input = reference("input.safetensors");
    let text = verify_ok(&out, &members, &["--input", s(&input), "--runtime", "ort", "--runs", "0"]);
    assert!(text.contains("equivalence: ok (30 outputs compared, |fused - member| <= 1e-4 + 1e-4 * |member|; the model has fp32 weights"), "{text}");
    for m in MEMBERS {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| 1 | {m} | 100 / 100 |")))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(row.ends_with("| 1.0000 | 1.0000 |"), "labels and boxes agree: {row}");
    }
}

#[test]
fn fp16_weights_halve_the_onnx_file_and_keep_the_detections() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let (f32_out, f16_out) = (dir.path().join("super.onnx"), dir.path().join("super16.onnx"));
    let members: Vec<PathBuf> = MEMBERS.iter().map(|m| reference(&format!("{m}.safetensors"))).collect();
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    fuse(&refs, &f32_out, &[]);
    fuse(&refs, &f16_out, &["--precision", "fp16"]);
    let (big, small) = (std::fs::metadata(&f32_out).unwrap().len(), std::fs::metadata(&f16_out).unwrap().len());
    assert!(small * 100 < big * 52, "fp16 {small} bytes vs fp32 {big}");
    let input = reference("input.safetensors");
    let mut args = vec!["verify", s(&f16_out), "--members"];
    args.extend(members.iter().map(|p| s(p)));
    args.extend_from_slice(&["--input", s(&input), "--runtime", "ort", "--runs", "0"]);
    // fp32 tolerances: fp16 weights fail them, and verify says so.
    let mut strict = args.clone();
    strict.extend_from_slice(&["--atol", "1e-4", "--rtol", "1e-4"]);
    strict.push("--json");
    let res = fusec(&strict);
    assert_eq!(res.status.code(), Some(1), "{}", String::from_utf8_lossy(&res.stderr));
    // An output that differs is its own kind of failure, with the file.
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    assert_eq!(j["error"]["kind"], "mismatch", "{j}");
    assert_eq!(j["error"]["file"], s(&f16_out), "{j}");
    // By default verify sees the fp16 weights and uses the fp16 tolerance;
    // it passes, and the detections stay: at most one per member (at the
    // 100-detection cut-off) finds no partner with IoU >= 0.5, and every
    // paired detection keeps its label.
    let text = String::from_utf8(ok(fusec(&args)).stdout).unwrap();
    let line =
        "equivalence: ok (30 outputs compared, |fused - member| <= 1e-2 + 1e-2 * |member|; the model has fp16 weights";
    assert!(text.contains(line), "{text}");
    for m in MEMBERS {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| 1 | {m} | 100 / 100 |")))
            .unwrap_or_else(|| panic!("{text}"));
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        let paired: usize = cols[4].parse().unwrap();
        let label_accuracy: f64 = cols[7].parse().unwrap();
        assert!(paired >= 99, "paired detections: {row}");
        assert_eq!(label_accuracy, paired as f64 / 100.0, "a paired detection changed its label: {row}");
    }
}

#[test]
fn fp16_compute_for_gpus_and_the_cuda_options_say_what_they_need() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super16.onnx");
    let members: Vec<PathBuf> = MEMBERS.iter().map(|m| reference(&format!("{m}.safetensors"))).collect();
    let refs: Vec<&Path> = members.iter().map(|p| p.as_path()).collect();
    fuse(&refs, &out, &["--precision", "fp16-compute"]);
    // The interface stays f32; inside, the model computes in f16.
    let ir = String::from_utf8(ok(fusec(&["inspect", s(&out), "--ir"])).stdout).unwrap();
    assert!(ir.contains("input  %0 \"image\": f32[1,3,512,512]"), "{}", &ir[..400]);
    assert!(ir.contains("= Conv(") && ir.lines().filter(|l| l.contains("= Conv(")).all(|l| l.contains(": f16[")));
    assert!(ir.contains("output") && ir.lines().filter(|l| l.starts_with("  output")).all(|l| l.contains(": f32[")));
    // Against the fp32 members: within the fp16 tolerance, detections kept.
    let input = reference("input.safetensors");
    let text = verify_ok(&out, &members, &["--input", s(&input), "--runtime", "ort", "--runs", "0"]);
    assert!(
        text.contains("equivalence: ok (30 outputs compared, |fused - member| <= 1e-2 + 1e-2 * |member|"),
        "{text}"
    );
    for m in MEMBERS {
        let row = text.lines().find(|l| l.starts_with(&format!("| 1 | {m} | "))).unwrap_or_else(|| panic!("{text}"));
        let paired: usize = row.split('|').map(str::trim).nth(4).unwrap().parse().unwrap();
        assert!(paired >= 99, "paired detections: {row}");
    }
    // verify --precision fp16: the fp32 fused model and the members, each
    // made to compute in f16 (members and fused with the same options).
    let f32_out = dir.path().join("super.onnx");
    fuse(&refs, &f32_out, &[]);
    let text = verify_ok(
        &f32_out,
        &members,
        &["--input", s(&input), "--runtime", "ort", "--runs", "0", "--precision", "fp16"],
    );
    assert!(text.contains("equivalence: ok") && text.contains("the model has fp16 compute"), "{text}");
    // CUDA options: a clear error without the CUDA provider, never a CPU run.
    let two = [s(&members[0]), s(&members[1])];
    for (extra, needle) in [
        (vec!["--device", "cuda", "--cuda-graph"], "has no CUDA execution provider"),
        (vec!["--cuda-graph"], "--cuda-graph needs --runtime ort --device cuda"),
        (vec!["--device", "cuda", "--precision", "fp16"], "has no CUDA execution provider"),
    ] {
        let mut a = vec!["bench", two[0], two[1], "--runtime", "ort", "--runs", "1", "--json"];
        a.extend(extra.iter().copied());
        let res = fusec(&a);
        assert_eq!(res.status.code(), Some(2), "{a:?}: {}", String::from_utf8_lossy(&res.stderr));
        let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
        assert_eq!(j["error"]["kind"], "input", "{j}");
        assert!(j["error"]["message"].as_str().unwrap().contains(needle), "{j}");
    }
}

/// `fuse --tune`: plans measured on ONNX Runtime, the fastest fused and
/// kept as a calibration file that reproduces the same model; `bench
/// --tune` shows it as a row beside the fixed lowerings.
#[test]
fn tune_measures_plans_and_keeps_the_fastest() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let mut members = vec![];
    for k in 0..2u64 {
        let p = dir.path().join(format!("m{k}.safetensors"));
        write_checkpoint_seeded(&p, &Spec::small(16, 2, 2, 2 + k as usize).tensors(), None, 300 + k);
        members.push(p);
    }
    let (out, cal) = (dir.path().join("tuned.onnx"), dir.path().join("plan.json"));
    let cache = dir.path().join("cache");
    // `fuse --tune` of the two members into `out`, with the cache in `cache`.
    let tuned = |out: &Path, extra: &[&str]| {
        let mut a = vec!["fuse", s(&members[0]), s(&members[1]), "--image-size", "128", "-o", s(out)];
        a.extend_from_slice(&["--tune", "--tune-runs", "3", "--json"]);
        a.extend_from_slice(extra);
        ok(fusec_with_cache(&a, &cache))
    };
    let res = tuned(&out, &["--calibrate", s(&cal)]);
    let text = String::from_utf8(res.stdout).unwrap();
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    let t = &j["report"]["tuning"];
    let cands = t["candidates"].as_array().unwrap();
    // Round 1: apart, all grouped, grouped from each of runs 1..7, the
    // choice from profiled costs (with each member's per-member runs as
    // subgraphs too), the default lowering and every member apart with its
    // blocks as subgraphs; round 2: the 8 one-run changes of its fastest
    // plan; round 3: `separate`, the costs' choices, the default, the
    // subgraphs and the 3 fastest plans so far.
    let rounds: Vec<u64> = cands.iter().map(|c| c["round"].as_u64().unwrap()).collect();
    assert_eq!(rounds, [vec![1; 13], vec![2; 8], vec![3; 8]].concat(), "{t}");
    assert_eq!(cands[0]["plan"], "00000000");
    assert_eq!(cands[1]["plan"], "11111111");
    let extras: Vec<&str> = cands[9..13].iter().map(|c| c["plan"].as_str().unwrap()).collect();
    assert_eq!(extras, ["costs", "costs-subgraphs", "default", "separate-subgraphs"], "{t}");
    let third: Vec<&str> = cands[21..26].iter().map(|c| c["plan"].as_str().unwrap()).collect();
    assert_eq!(third, ["00000000", "costs", "costs-subgraphs", "default", "separate-subgraphs"], "{t}");
    let chosen = t["chosen"].as_str().unwrap();
    // Round 3 chooses: `separate`, or a candidate measurably faster than it
    // (per round, rounds 1 and 3 pooled where it ran in both), the fastest
    // such.
    let over = |c: &serde_json::Value| c["over_separate"].as_f64();
    let lo = |c: &serde_json::Value| c["over_separate_interval"][0].as_f64().unwrap();
    assert!(over(&cands[21]).is_none() && cands[22..].iter().all(|c| over(c).is_some_and(|m| m > 0.0)), "{t}");
    let eligible: Vec<&serde_json::Value> =
        cands[22..].iter().filter(|c| over(c).unwrap() > 1.0 && lo(c) >= 0.97).collect();
    let best = eligible.iter().max_by(|a, b| over(a).unwrap().total_cmp(&over(b).unwrap()));
    assert_eq!(chosen, best.map_or("00000000", |c| c["plan"].as_str().unwrap()), "{t}");
    assert!(text.contains(&format!("| 3 | {chosen} (chosen) |")), "{text}");
    // Rounds 1 and 2 time 3 rounds, round 3 three times as many, split
    // among 3 sessions of each model made afresh.
    let timed: Vec<u64> = cands.iter().map(|c| c["runs"].as_u64().unwrap()).collect();
    assert_eq!(timed, [vec![3; 21], vec![9; 8]].concat(), "{t}");
    assert!(text.contains("9 in round 3 split among 3 sessions of each model made afresh"), "{text}");
    // The costs: one digit per node group, grouping only groupable ones;
    // the cut's choice costs no more (modelled) than all or none grouped.
    let groups = j["report"]["groups"].as_u64().unwrap();
    let c = &t["costs"];
    let assignment = c["assignment"].as_str().unwrap();
    assert_eq!(assignment.len() as u64, groups, "{c}");
    assert_eq!(assignment.chars().filter(|d| *d == '1').count() as u64, c["grouped"].as_u64().unwrap(), "{c}");
    assert!(c["grouped"].as_u64() <= c["groupable"].as_u64() && c["groupable"].as_u64() <= Some(groups), "{c}");
    let us = |k: &str| c[k].as_f64().unwrap();
    assert!(us("separate_us") > 0.0 && us("chosen_us") <= us("separate_us").min(us("all_grouped_us")) + 1e-6, "{c}");
    assert!(text.contains("costs (ONNX Runtime's profile"), "{text}");
    let (lowering, digits) = match chosen {
        "costs" | "costs-subgraphs" => ("assigned", Some(assignment)),
        "default" => ("regions", None),
        "separate-subgraphs" => ("plan", Some("00000000")),
        plan => ("plan", Some(plan)),
    };
    assert_eq!(j["report"]["lowering"]["lowering"], lowering);
    assert_eq!(j["report"]["lowering"]["plan"].as_str(), digits);
    let subgraphs = matches!(chosen, "costs-subgraphs" | "separate-subgraphs");
    assert_eq!(j["report"]["lowering"]["member_subgraphs"], subgraphs, "{t}");
    // Per run: its node groups (together every group once), what grouping
    // stacks there, whether the chosen plan groups it, and a measured gain.
    let runs = t["plan_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8, "{t}");
    let mut next = 0;
    for (i, r) in runs.iter().enumerate() {
        let (first, last) = (r["groups"][0].as_u64().unwrap(), r["groups"][1].as_u64().unwrap());
        assert_eq!(first, next, "run {i} starts where run {} ended: {t}", i.max(1) - 1);
        next = last + 1;
        let by_costs = assignment[first as usize..=last as usize].chars().filter(|d| *d == '1').count();
        assert_eq!(r["by_costs"].as_u64(), Some(by_costs as u64), "{t}");
        match chosen {
            "costs" | "costs-subgraphs" => assert_eq!(r["grouped"], by_costs > 0, "{t}"),
            "default" => assert!(r["grouped"].is_boolean(), "{t}"),
            "separate-subgraphs" => assert_eq!(r["grouped"], false, "{t}"),
            plan => assert_eq!(r["grouped"], plan.as_bytes()[i] == b'1', "{t}"),
        }
        assert!(r["gain"].as_f64().is_some_and(|g| g > 0.0), "{t}");
        assert_eq!(r["member_axis"], 0, "a CNN stacks on channels: {t}");
    }
    assert_eq!(next, groups, "{t}");
    assert!(runs.iter().map(|r| r["channels"].as_u64().unwrap()).sum::<u64>() > groups / 2, "{t}");
    assert!(text.contains("| run | node groups | stacked when grouped"), "{text}");
    assert!(t["cached"].is_null(), "{t}");
    // The plan is kept in the cache: fused again (the same structure), it
    // is reused without measuring and gives the same model; --retune measures.
    let cached_out = dir.path().join("cached.onnx");
    let again = tuned(&cached_out, &[]);
    let ja: serde_json::Value = serde_json::from_slice(&again.stderr).unwrap();
    let ta = &ja["report"]["tuning"];
    assert_eq!(ta["chosen"], chosen, "{ta}");
    assert_eq!(ta["cached"].as_str(), Some(cache.join("tune.json").to_str().unwrap()), "{ta}");
    assert!(ja["notes"].to_string().contains("--retune measures again"), "{ja}");
    assert_eq!(std::fs::read(&cached_out).unwrap(), std::fs::read(&out).unwrap());
    // A plan measured slower than the members (the kept one edited so) is
    // said so by `fuse`, not only by a bench table.
    let kept = cache.join("tune.json");
    let mut plans: serde_json::Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    for (_, plan) in plans.as_object_mut().unwrap() {
        plan["speedup_p50"] = serde_json::json!(0.91);
        plan["speedup_p50_interval"] = serde_json::json!([0.89, 0.93]);
    }
    std::fs::write(&kept, serde_json::to_vec(&plans).unwrap()).unwrap();
    let slow = tuned(&dir.path().join("slow.onnx"), &[]);
    let jw: serde_json::Value = serde_json::from_slice(&slow.stderr).unwrap();
    let w = jw["warnings"].to_string();
    assert!(w.contains("runs at 0.91x the members one after another (95% interval 0.89–0.93x"), "{jw}");
    assert!(w.contains("slower than running the members one by one"), "{jw}");
    let retuned = dir.path().join("retuned.onnx");
    let re = tuned(&retuned, &["--retune"]);
    let jr: serde_json::Value = serde_json::from_slice(&re.stderr).unwrap();
    assert!(jr["report"]["tuning"]["cached"].is_null(), "{jr}");
    assert_eq!(jr["report"]["tuning"]["candidates"].as_array().unwrap().len(), 29, "{jr}");
    assert!(jr["report"]["tuning"]["costs"]["source"].as_str().unwrap().contains("median of 3 runs"), "{jr}");
    // Node signatures profiled once are kept (costs.json): without the
    // plan, tuning again measures plans but profiles nothing.
    std::fs::remove_file(cache.join("tune.json")).unwrap();
    let stored = tuned(&dir.path().join("stored.onnx"), &[]);
    let js: serde_json::Value = serde_json::from_slice(&stored.stderr).unwrap();
    let src = js["report"]["tuning"]["costs"]["source"].as_str().unwrap().to_string();
    assert!(src.contains("as profiled here before (costs.json)"), "{src}");
    assert_eq!(js["report"]["tuning"]["costs"]["assignment"].as_str().map(str::len), Some(groups as usize));
    // On tract (no per-node profile), a cost model fitted on those decides.
    let on_tract = tuned(&dir.path().join("tract.onnx"), &["--runtime", "tract"]);
    let jt: serde_json::Value = serde_json::from_slice(&on_tract.stderr).unwrap();
    let src = jt["report"]["tuning"]["costs"]["source"].as_str().unwrap().to_string();
    assert!(src.contains("a cost model (FLOPs and bytes per op kind) fitted on") && src.contains("tract"), "{src}");
    let c = &jt["report"]["tuning"]["costs"];
    assert!(c["chosen_us"].as_f64() <= c["separate_us"].as_f64(), "{c}");
    // A costs.json that cannot be read is said so, left as it is, and the
    // model takes its defaults.
    std::fs::write(cache.join("costs.json"), b"{ not json").unwrap();
    let broken = tuned(&dir.path().join("broken.onnx"), &["--runtime", "tract", "--retune"]);
    let jb: serde_json::Value = serde_json::from_slice(&broken.stderr).unwrap();
    assert!(jb["warnings"].to_string().contains("costs.json cannot be read"), "{jb}");
    let src = jb["report"]["tuning"]["costs"]["source"].as_str().unwrap().to_string();
    assert!(src.contains("default coefficients"), "{src}");
    assert_eq!(std::fs::read(cache.join("costs.json")).unwrap(), b"{ not json");
    // The calibration file reproduces the model; its outputs are the members'.
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cal).unwrap()).unwrap();
    assert_eq!((c["lowering"].as_str(), c["plan"].as_str()), (Some(lowering), digits), "{c}");
    let again = dir.path().join("again.onnx");
    ok(fusec(&[
        "fuse",
        s(&members[0]),
        s(&members[1]),
        "--image-size",
        "128",
        "-o",
        s(&again),
        "--calibration",
        s(&cal),
    ]));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&out).unwrap());
    let input = image(&dir, 128);
    let fused = run(&out, &input, "ort", &[]);
    for (k, m) in members.iter().enumerate() {
        let alone = run(m, &input, "ort", &["--image-size", "128"]);
        assert_close(&fused, &format!("m{k}/"), &alone, &format!("member m{k}"));
    }
    // bench --tune: the tuned plan is one more row.
    let json = dir.path().join("bench.json");
    ok(fusec(&[
        "bench",
        s(&members[0]),
        s(&members[1]),
        "--image-size",
        "128",
        "--runtime",
        "ort",
        "--runs",
        "2",
        "--tune",
        "--tune-runs",
        "2",
        "--json-out",
        s(&json),
    ]));
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = b["rows"].as_array().unwrap();
    let plan = b["tuning"]["chosen"].as_str().unwrap();
    let label = match plan {
        "costs" => {
            let c = &b["tuning"]["costs"];
            format!("costs: {} of {} node groups grouped", c["grouped"], c["groupable"])
        }
        "default" => "default: regions from 0.25".to_string(),
        _ => format!("plan {plan}"),
    };
    assert_eq!(rows.last().unwrap()["config"], format!("fused, tuned ({label})"), "{b}");
    assert!(rows.last().unwrap()["max_abs"].as_f64().unwrap() <= 1e-4, "{b}");
}
