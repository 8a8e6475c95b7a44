//! Transformer members from both of torch's ONNX exporters (the dynamo one
//! at opset 20, TorchScript at opset 17): small BERT cross-encoders with
//! int64 token inputs and an attention mask, and ViTs, each trio with
//! heads of different sizes (`../shared/reference/transformers`). Every
//! member imports and reproduces PyTorch's outputs on both runtimes; every
//! trio fuses, in every lowering (grouped: on a member axis), into a model
//! whose outputs are each member's.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fusec_verify::io::read_tensors;

const SETS: [(&str, [&str; 3]); 4] = [
    ("bert_tiny_default", ["t1", "t2", "t3"]),
    ("bert_tiny_ts", ["t1", "t2", "t3"]),
    ("vit_micro_default", ["v2", "v5", "v9"]),
    ("vit_micro_ts", ["v2", "v5", "v9"]),
];

fn set(name: &str) -> PathBuf {
    transformers_dir().join(name)
}

/// The BERT trio `t1`, `t2`, `t3` of a set.
fn bert_trio(d: &Path) -> Vec<PathBuf> {
    ["t1", "t2", "t3"].iter().map(|m| d.join(format!("{m}.onnx"))).collect()
}

/// `cmd` with the member files as its first arguments.
fn args_with<'a>(cmd: &'a str, files: &'a [PathBuf]) -> Vec<&'a str> {
    std::iter::once(cmd).chain(files.iter().map(|f| s(f))).collect()
}

fn run(model: &Path, input: &Path, runtime: &str, out: &Path) {
    ok(fusec(&["run", s(model), "--input", s(input), "--runtime", runtime, "-o", s(out)]));
}

#[test]
fn every_member_imports_and_reproduces_pytorch_on_both_runtimes() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    for (name, members) in SETS {
        let d = set(name);
        for m in members {
            for rt in ["ort", "tract"] {
                let out = dir.path().join(format!("{name}-{m}-{rt}.safetensors"));
                run(&d.join(format!("{m}.onnx")), &d.join("input.safetensors"), rt, &out);
                let got = read_tensors(&out).unwrap();
                let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
                assert_eq!(assert_close(&got, "", &want, &format!("{name}/{m} on {rt}")), 1);
            }
        }
    }
}

#[test]
fn every_trio_fuses_and_each_member_answers_as_in_pytorch() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    for (name, members) in SETS {
        let d = set(name);
        let files: Vec<PathBuf> = members.iter().map(|m| d.join(format!("{m}.onnx"))).collect();
        for lowering in ["regions", "grouped", "separate"] {
            let fused = dir.path().join(format!("{name}-{lowering}.onnx"));
            let mut args = args_with("fuse", &files);
            args.extend_from_slice(&["-o", s(&fused), "--lowering", lowering, "--explain"]);
            let explain = String::from_utf8(ok(fusec(&args)).stdout).unwrap();
            // grouped stacks the encoder on a member axis; the others keep it per member.
            let stacked = explain
                .lines()
                .find_map(|l| l.trim().strip_prefix("grouped (stacked):"))
                .and_then(|r| r.split(", ").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{explain}"));
            assert_eq!(stacked > 20, lowering == "grouped", "{name} {lowering}: {explain}");
            // The default keeps what channels cannot stack per member by
            // choice, and says so; nothing it lists is unstackable.
            let line = |label: &str| explain.lines().find(|l| l.trim().starts_with(label)).map(str::to_owned);
            let by_choice = line("of which channels cannot stack, and this lowering does not stack on a member axis");
            assert_eq!(
                by_choice.as_deref().is_some_and(|l| l.contains("MatMul")),
                lowering == "regions",
                "{name} {lowering}: {explain}"
            );
            // Nor does it stack a run that would only copy between per-member
            // layers (the ViTs' attention scaling and softmax), and says so.
            if lowering == "regions" {
                assert!(explain.contains("grouped (stacked):          0 ("), "{name}: {explain}");
                let islands = line("of which kept per member as runs with no Conv, Gemm or MatMul");
                let want = match name {
                    "vit_micro_ts" => Some("Mul 2, Softmax 1"),
                    "vit_micro_default" => Some("Mul 4, Softmax 2"),
                    _ => None,
                };
                let got = islands.as_deref().and_then(|l| l.split("would only copy): ").nth(1));
                assert_eq!(got, want, "{name}: {explain}");
            }
            let missing = line("of which not stackable yet:").unwrap_or_default();
            assert!(
                !missing.contains("MatMul") && !missing.contains("LayerNormalization"),
                "{name} {lowering}: {explain}"
            );
            for rt in ["ort", "tract"] {
                let out = dir.path().join(format!("{name}-{lowering}-{rt}.safetensors"));
                run(&fused, &d.join("input.safetensors"), rt, &out);
                let got = read_tensors(&out).unwrap();
                for m in members {
                    let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
                    assert_close(&got, &format!("{m}/"), &want, &format!("{name} {lowering} {m} on {rt}"));
                }
            }
        }
        // verify agrees, on the token inputs it makes itself too.
        let fused = dir.path().join(format!("{name}-regions.onnx"));
        let text = verify_ok(&fused, &files, &["--runs", "0"]);
        assert!(text.contains("equivalence: ok (6 outputs compared"), "{name}: {text}");
    }
}

#[test]
fn huggingface_folders_build_the_graph_pytorch_runs() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let d = set("bert_tiny_default");
    let folders: Vec<PathBuf> = ["t1", "t2", "t3"].iter().map(|m| d.join(format!("{m}.hf"))).collect();
    // Each folder alone (and its model.safetensors, which finds config.json beside it).
    for (m, f) in ["t1", "t2", "t3"].iter().zip(&folders) {
        for path in [f.clone(), f.join("model.safetensors")] {
            let out = dir.path().join(format!("{m}.safetensors"));
            ok(fusec(&["run", s(&path), "--seq-len", "32", "--input", s(&d.join("input.safetensors")), "-o", s(&out)]));
            let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
            assert_close(&read_tensors(&out).unwrap(), "", &want, &format!("{}", path.display()));
        }
    }
    // Fused: outputs t1/logits, ... (members named after the folders).
    let fused = dir.path().join("hf.onnx");
    let mut args = args_with("fuse", &folders);
    args.extend_from_slice(&["--seq-len", "32", "-o", s(&fused)]);
    let stderr = String::from_utf8(ok(fusec(&args)).stderr).unwrap();
    // The default stacks none of a BERT's layers, and the note says so.
    assert!(
        stderr.lines().any(|l| l.starts_with("lowering: the default")
            && l.ends_with(
                "for these members it stacks nothing: every layer not shared stays per member, as with --lowering separate"
            )),
        "{stderr}"
    );
    let out = dir.path().join("fused.safetensors");
    run(&fused, &d.join("input.safetensors"), "ort", &out);
    for m in ["t1", "t2", "t3"] {
        let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
        assert_close(&read_tensors(&out).unwrap(), &format!("{m}/"), &want, m);
    }
    // A sequence longer than the position table is refused, naming the limit.
    let res = fusec(&["inspect", s(&folders[0]), "--ir", "--seq-len", "65"]);
    let line = last_error_line(&res, 2);
    assert!(line.contains("max_position_embeddings 64"), "{line}");
}

#[test]
fn minilm_cross_encoders_fuse_and_match_each_member() {
    require_ort();
    let base = hf::minilm_dir();
    let res = ok(fusec(&["inspect", s(&base)]));
    let text = String::from_utf8(res.stdout).unwrap();
    assert!(text.contains("bert (BertModel; 6 layers, hidden 384, 12 heads"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<PathBuf> = (1..=3)
        .map(|labels| {
            let p = dir.path().join(format!("rerank{labels}"));
            hf::cross_encoder(&base, &p, labels, labels as u64, false);
            p
        })
        .collect();
    let fused = dir.path().join("rerankers.onnx");
    let mut args = args_with("fuse", &members);
    args.extend_from_slice(&["-o", s(&fused), "--explain"]);
    ok(fusec(&args));
    let text = verify_ok(&fused, &members, &["--runs", "0"]);
    assert!(text.contains("equivalence: ok (6 outputs compared"), "{text}");
    // At batch 4, stacked on a member axis, the one-logit member's rankings
    // of each batch are kept.
    let fused4 = dir.path().join("rerankers4.onnx");
    let mut args = args_with("fuse", &members);
    args.extend_from_slice(&["-o", s(&fused4), "--batch", "4", "--seq-len", "32", "--lowering", "grouped"]);
    ok(fusec(&args));
    let text = verify_ok(&fused4, &members, &["--batch", "4", "--seq-len", "32", "--runs", "3", "--warmup", "1"]);
    assert!(
        text.contains("rerank1: the fused model ranks the batch's 4 pairs as the member does on 2 of 2 inputs"),
        "{text}"
    );
    assert!(text.contains("| p95 ms |") && text.contains("| pairs/s |"), "{text}");

    // A frozen encoder (bit-identical in every member) with three heads:
    // the encoder is computed once.
    let frozen: Vec<PathBuf> = (1..=3)
        .map(|labels| {
            let p = dir.path().join(format!("frozen{labels}"));
            hf::cross_encoder(&base, &p, labels, 10 + labels as u64, true);
            p
        })
        .collect();
    let fused = dir.path().join("frozen.onnx");
    let mut args = args_with("fuse", &frozen);
    args.extend_from_slice(&["-o", s(&fused), "--explain"]);
    let text = String::from_utf8(ok(fusec(&args)).stdout).unwrap();
    let shared: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("shared (computed once):"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let groups: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("aligned node groups: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // Everything but the classifier's MatMul and Add is shared.
    assert_eq!(shared, groups - 2, "{text}");
    let text = verify_ok(&fused, &frozen, &["--runs", "0"]);
    assert!(text.contains("equivalence: ok (6 outputs compared"), "{text}");
}

/// fp16 compute on BERT (`run --precision fp16`, the fused model made with
/// `--precision fp16-compute`): the attention mask's `f32::MIN` saturates
/// to f16's -65504 instead of -inf (whose product with a 0 mask entry
/// would be NaN), so the logits stay finite and near PyTorch's.
#[test]
fn fp16_compute_keeps_bert_finite_and_close() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let d = set("bert_tiny_default");
    let input = d.join("input.safetensors");
    let fused = dir.path().join("fp16.onnx");
    let folders: Vec<PathBuf> = ["t1", "t2", "t3"].iter().map(|m| d.join(format!("{m}.hf"))).collect();
    let mut args = args_with("fuse", &folders);
    args.extend_from_slice(&["--seq-len", "32", "-o", s(&fused), "--precision", "fp16-compute"]);
    ok(fusec(&args));
    let out = dir.path().join("fused.safetensors");
    run(&fused, &input, "ort", &out);
    let alone = dir.path().join("t1.safetensors");
    ok(fusec(&[
        "run",
        s(&folders[0]),
        "--seq-len",
        "32",
        "--input",
        s(&input),
        "--precision",
        "fp16",
        "-o",
        s(&alone),
    ]));
    let got = read_tensors(&out).unwrap();
    let t1 = read_tensors(&alone).unwrap();
    for m in ["t1", "t2", "t3"] {
        let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
        let (_, g) = got.iter().find(|(n, _)| *n == format!("{m}/logits")).unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{m}: {g:?}");
        let d = fusec_verify::compare::diff(g, &want[0].1).unwrap();
        assert!(d.max_abs < 1e-2, "{m}: {d:?}");
    }
    assert!(t1[0].1.iter().all(|x| x.is_finite()), "{t1:?}");
}

/// `fusec bench` on a BERT trio: the channel-stacking variants of grouped
/// are the grouped model, and every `regions` row is the separate model
/// (the default keeps transformer layers per member): each distinct model
/// is timed once and the repeats say whose model they are; the stacked
/// row is a different model whose outputs equal the members'.
#[test]
fn bench_times_each_distinct_transformer_model_once() {
    require_ort();
    let d = set("bert_tiny_ts");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let files = bert_trio(&d);
    let mut args = args_with("bench", &files);
    args.extend_from_slice(&["--runtime", "ort", "--runs", "2", "--warmup", "1", "--json-out", s(&json)]);
    let text = String::from_utf8(ok(fusec(&args)).stdout).unwrap();
    assert!(text.contains("| fused, grouped, BatchNorm kept (the model of `fused, grouped`) |"), "{text}");
    assert!(text.contains("| fused, regions from 0.25 (the model of `fused, separate`) |"), "{text}");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = j["rows"].as_array().unwrap();
    let row = |c: &str| rows.iter().find(|r| r["config"] == c).unwrap_or_else(|| panic!("no {c}: {j}"));
    assert!(row("fused, grouped")["same_as"].is_null() && row("fused, separate")["same_as"].is_null());
    for (c, of) in
        [("fused, grouped, depthwise split", "fused, grouped"), ("fused, regions from 0.7", "fused, separate")]
    {
        assert_eq!(row(c)["same_as"], of, "{c}");
        assert_eq!(row(c)["p50_ms"], row(of)["p50_ms"], "{c}: the figures of {of}");
    }
    assert!(row("fused, grouped")["max_abs"].as_f64().unwrap() <= 1e-6, "{j}");
    assert!(rows.iter().filter(|r| r["same_as"].is_null()).count() >= 4, "baseline, prepared, grouped, separate: {j}");
}

/// A calibration file written before member-axis stacking existed (no
/// `member_axis` field) fuses as it did then: `grouped` keeps a
/// transformer's layers per member; one that says `member_axis: true`
/// stacks them (73 node groups: each of the two layers' query, key and
/// value projections merged into one MatMul, bias Add and Split; the
/// Reshapes into and out of 2-D rows, `flatten_rows`).
#[test]
fn calibration_files_without_member_axis_fuse_as_before() {
    let d = set("bert_tiny_ts");
    let dir = tempfile::tempdir().unwrap();
    let files = bert_trio(&d);
    let mut cal = serde_json::json!({
        "config": "fused, grouped", "lowering": "grouped", "group_from": 0.0, "keep_bn": false,
        "split_depthwise": false, "split_pointwise": false, "speedup_p50": 1.0,
        "device": "ort (cpu, 2 threads)", "members": ["t1", "t2", "t3"]
    });
    for (member_axis, stacked) in [(None, 0), (Some(true), 73)] {
        if let Some(m) = member_axis {
            cal["member_axis"] = m.into();
        }
        let path = dir.path().join("lowering.json");
        std::fs::write(&path, serde_json::to_vec(&cal).unwrap()).unwrap();
        let out = dir.path().join("fused.onnx");
        let mut args = args_with("fuse", &files);
        args.extend_from_slice(&["-o", s(&out), "--calibration", s(&path), "--explain"]);
        let text = String::from_utf8(ok(fusec(&args)).stdout).unwrap();
        assert!(text.contains(&format!(", {stacked} on a member axis)")), "{member_axis:?}: {text}");
        assert!(
            text.contains("t1: 6 linear layers reading one value merged into 2 MatMul (each then split)"),
            "{text}"
        );
    }
}

/// `fuse --tune` of BERT members: the costs are profiled (member-axis
/// groups among them), the grouped form with linear layers per member is a
/// candidate in rounds 1 and 3, and the model chosen answers as each
/// member does in PyTorch.
#[test]
fn tune_weighs_member_axis_stacking_and_the_linear_split() {
    require_ort();
    let d = set("bert_tiny_ts");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tuned.onnx");
    let files = bert_trio(&d);
    let mut args = args_with("fuse", &files);
    args.extend_from_slice(&["-o", s(&out), "--tune", "--tune-runs", "2", "--json"]);
    let res = ok(fusec(&args));
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    let t = &j["report"]["tuning"];
    let plans: Vec<(u64, &str)> = t["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["round"].as_u64().unwrap(), c["plan"].as_str().unwrap()))
        .collect();
    for round in [1, 3] {
        for extra in ["costs", "default", "linear-split"] {
            assert!(plans.contains(&(round, extra)), "{extra} in round {round}: {plans:?}");
        }
    }
    let c = &t["costs"];
    assert!(c["source"].as_str().unwrap().contains("profile"), "{c}");
    assert!(c["groupable"].as_u64().unwrap() > 50, "member-axis groups are groupable: {c}");
    assert_eq!(c["assignment"].as_str().unwrap().len() as u64, j["report"]["groups"].as_u64().unwrap());
    let got = dir.path().join("out.safetensors");
    run(&out, &d.join("input.safetensors"), "ort", &got);
    let got = read_tensors(&got).unwrap();
    for m in ["t1", "t2", "t3"] {
        let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
        assert_eq!(assert_close(&got, &format!("{m}/"), &want, &format!("tuned, member {m}")), 1);
    }
}

/// The tests' HuggingFace folders of RoBERTa, XLM-RoBERTa and ELECTRA
/// (`tests/data/hf-text`, written by `scripts/make-hf-text-fixtures.py`
/// with PyTorch's outputs beside them).
fn hf_text(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/hf-text").join(family)
}

/// RoBERTa and XLM-RoBERTa (positions counted past the padding, from the
/// ids at run time; no token types; their own classification head) and
/// ELECTRA (embeddings narrower than the hidden size, projected; a GELU
/// head) from HuggingFace folders: each model alone reproduces PyTorch on
/// both runtimes (a batch of two, the first row padded), and two
/// cross-encoders fuse, in the default lowering and stacked on a member
/// axis, into a model whose outputs are each member's.
#[test]
fn roberta_xlm_roberta_and_electra_folders_build_the_graph_pytorch_runs() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let shape = ["--batch", "2", "--seq-len", "12"];
    for family in ["roberta", "xlm-roberta", "electra"] {
        let d = hf_text(family);
        let input = d.join("input.safetensors");
        for m in ["base", "m1", "m2"] {
            for rt in ["ort", "tract"] {
                let out = dir.path().join(format!("{family}-{m}-{rt}.safetensors"));
                let folder = d.join(format!("{m}.hf"));
                let mut args = vec!["run", s(&folder), "--input", s(&input), "--runtime", rt];
                args.extend_from_slice(&shape);
                args.extend_from_slice(&["-o", s(&out)]);
                ok(fusec(&args));
                let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
                assert_close(&read_tensors(&out).unwrap(), "", &want, &format!("{family} {m} on {rt}"));
            }
        }
        let members = [d.join("m1.hf"), d.join("m2.hf")];
        for lowering in ["regions", "grouped"] {
            let fused = dir.path().join(format!("{family}-{lowering}.onnx"));
            let mut args = args_with("fuse", &members);
            args.extend_from_slice(&shape);
            args.extend_from_slice(&["--lowering", lowering, "-o", s(&fused)]);
            ok(fusec(&args));
            let out = dir.path().join(format!("{family}-{lowering}.safetensors"));
            run(&fused, &input, "ort", &out);
            for m in ["m1", "m2"] {
                let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
                assert_close(&read_tensors(&out).unwrap(), &format!("{m}/"), &want, &format!("{family} {lowering}"));
            }
        }
    }
    // What was recognized, and RoBERTa's longest sequence named.
    let out = ok(fusec(&["inspect", s(&hf_text("xlm-roberta").join("m2.hf")), "--seq-len", "12"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("architecture: xlm-roberta (XLMRobertaForSequenceClassification, 3 labels; 2 layers, hidden 16"),
        "{text}"
    );
    let out = ok(fusec(&["inspect", s(&hf_text("electra").join("base.hf")), "--seq-len", "12"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("architecture: electra (ElectraModel; 2 layers, hidden 16, 2 heads, intermediate 32, vocab 60, embedding 8;"), "{text}");
    let res = fusec(&["inspect", s(&hf_text("roberta").join("m1.hf")), "--ir", "--seq-len", "19"]);
    let line = last_error_line(&res, 2);
    assert!(line.contains("seq-len at most max_position_embeddings 20 less pad_token_id 1 and 1 (18)"), "{line}");
    // Another model_type is refused by name, with the way in that works.
    let other = dir.path().join("distil.hf");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(hf_text("roberta").join("m1.hf/model.safetensors"), other.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf_text("roberta").join("m1.hf/config.json")).unwrap()).unwrap();
    config["model_type"] = "distilbert".into();
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let line = last_error_line(&fusec(&["inspect", s(&other), "--ir"]), 2);
    assert!(
        line.contains("config.json: model_type \"distilbert\": fusec builds HuggingFace checkpoints of model_type \"bert\", \"roberta\", \"xlm-roberta\", \"electra\" (others: export them with torch.onnx"),
        "{line}"
    );
}
