//! HuggingFace checkpoint folders made by the tests: fine-tuned
//! cross-encoders (`BertForSequenceClassification`) from the real
//! all-MiniLM-L6-v2 (`scripts/install-minilm.sh`).

use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

/// The all-MiniLM-L6-v2 folder (`FUSEC_MINILM_DIR`, or the checkout's
/// `.cache/minilm/all-MiniLM-L6-v2` that `scripts/test.sh` installs).
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("FUSEC_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/minilm/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 not found at {} (run `bash scripts/install-minilm.sh`, or `bash scripts/test.sh`)",
        dir.display()
    );
    dir
}

fn noise(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Writes `out/` as a cross-encoder fine-tuned from `base` (a BertModel
/// folder): the encoder under `bert.`, every weight moved by 2% of its
/// spread unless `frozen` (then bit-identical to the base), and its own
/// classifier of `labels` outputs.
pub fn cross_encoder(base: &Path, out: &Path, labels: usize, seed: u64, frozen: bool) {
    std::fs::create_dir_all(out).unwrap();
    let bytes = std::fs::read(base.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut s = seed;
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    let mut hidden = 0;
    for name in names {
        let v = st.tensor(&name).unwrap();
        let mut data = v.data().to_vec();
        if v.dtype() == Dtype::F32 && !frozen {
            let vals: Vec<f32> = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            let spread = vals.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
            data = vals.iter().flat_map(|x| (x + 0.02 * spread * noise(&mut s)).to_le_bytes()).collect();
        }
        if name == "pooler.dense.bias" {
            hidden = v.shape()[0];
        }
        tensors.push((format!("bert.{name}"), v.dtype(), v.shape().to_vec(), data));
    }
    let w: Vec<u8> = (0..labels * hidden).flat_map(|_| (0.05 * noise(&mut s)).to_le_bytes()).collect();
    let b: Vec<u8> = (0..labels).flat_map(|_| (0.01 * noise(&mut s)).to_le_bytes()).collect();
    tensors.push(("classifier.weight".into(), Dtype::F32, vec![labels, hidden], w));
    tensors.push(("classifier.bias".into(), Dtype::F32, vec![labels], b));
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, sh, data)| (n.clone(), TensorView::new(*d, sh.clone(), data).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["id2label"] = (0..labels).map(|i| (i.to_string(), serde_json::json!(format!("LABEL_{i}")))).collect();
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}
