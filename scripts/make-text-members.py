#!/usr/bin/env python3
"""Makes three fine-tuned text-encoder cross-encoders of a HuggingFace
architecture as `torch.onnx` exports of `*ForSequenceClassification`
(TorchScript exporter, opset 17; `--dynamo` for torch's newer exporter), for
benchmarks of families beyond BERT: a random-init base of MiniLM-L6's shape
(hidden 384, 6 layers, 12 heads, intermediate 1536; `--small`: hidden 256,
4 layers, 4 heads, intermediate 1024), vocabulary 8000, then each member
the base's weights perturbed (2% of each tensor's spread) and its own head
of 1, 2 or 3 labels. Inputs `input_ids` and `attention_mask` (int64, static
batch 1 and sequence 128, or `--batch B --seq S`), output `logits`.

    python3 scripts/make-text-members.py roberta members/
    fusec bench members/roberta/m1.onnx members/roberta/m2.onnx members/roberta/m3.onnx --runtime ort --threads 2 --tune

Families: bert, roberta, xlm-roberta, electra, distilbert, deberta-v2,
albert, mpnet. Writes OUT/FAMILY/m{1,2,3}.onnx (OUT/FAMILY-dynamo/ with
--dynamo, OUT/FAMILY-small/ with --small); with --folders the same
members as HuggingFace folders (`save_pretrained`), OUT/FAMILY-hf/m{1,2,3}/,
which fusec reads for bert, roberta, xlm-roberta and electra:

    python3 scripts/make-text-members.py xlm-roberta members/ --folders
    fusec bench members/xlm-roberta-hf/m1 members/xlm-roberta-hf/m2 members/xlm-roberta-hf/m3 --runtime ort --threads 2 --tune

Needs torch and transformers (PyPI; onnxscript for --dynamo); CI does not
use it.
"""
import argparse
import os

import torch
import transformers as T

VOCAB = 8000
FAMILIES = {
    "bert": (T.BertConfig, T.BertForSequenceClassification, {}),
    "roberta": (T.RobertaConfig, T.RobertaForSequenceClassification, {"max_position_embeddings": 130}),
    "xlm-roberta": (T.XLMRobertaConfig, T.XLMRobertaForSequenceClassification, {"max_position_embeddings": 130}),
    "electra": (T.ElectraConfig, T.ElectraForSequenceClassification, {"embedding_size": 128}),
    "distilbert": (T.DistilBertConfig, T.DistilBertForSequenceClassification, {}),
    "deberta-v2": (T.DebertaV2Config, T.DebertaV2ForSequenceClassification, {}),
    "albert": (T.AlbertConfig, T.AlbertForSequenceClassification, {"embedding_size": 128}),
    "mpnet": (T.MPNetConfig, T.MPNetForSequenceClassification, {}),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", choices=sorted(FAMILIES))
    ap.add_argument("out")
    ap.add_argument("--dynamo", action="store_true", help="export with torch.onnx.export(..., dynamo=True)")
    ap.add_argument("--small", action="store_true", help="hidden 256, 4 layers (quick checks)")
    ap.add_argument("--folders", action="store_true", help="write HuggingFace folders, not ONNX exports")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args()
    config, model, extra = FAMILIES[a.family]
    hidden, layers, heads, inner = (256, 4, 4, 1024) if a.small else (384, 6, 12, 1536)
    if a.family == "distilbert":
        shape = {"dim": hidden, "n_layers": layers, "n_heads": heads, "hidden_dim": inner}
    else:
        shape = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                 "intermediate_size": inner}
    if "max_position_embeddings" in extra:
        extra = dict(extra, max_position_embeddings=max(extra["max_position_embeddings"], a.seq + 2))
    make = lambda labels: model(config(vocab_size=VOCAB, num_labels=labels, **shape, **extra)).eval()  # noqa: E731
    torch.manual_seed(0)
    base = make(1).state_dict()
    suffix = ("-dynamo" if a.dynamo else "") + ("-small" if a.small else "") + ("-hf" if a.folders else "")
    out = os.path.join(a.out, a.family + suffix)
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (a.batch, a.seq), generator=g)
    mask = torch.ones(a.batch, a.seq, dtype=torch.long)
    mask[:, -a.seq // 5:] = 0
    for k, labels in enumerate((1, 2, 3)):
        torch.manual_seed(10 + k)
        m = make(labels)
        with torch.no_grad():
            for name, t in m.state_dict().items():
                b = base.get(name)
                if b is not None and b.shape == t.shape and t.dtype.is_floating_point:
                    t.copy_(b + 0.02 * b.std().nan_to_num(0) * torch.randn(t.shape, generator=g))
        if a.folders:
            m.save_pretrained(os.path.join(out, f"m{labels}"))
            print(os.path.join(out, f"m{labels}"))
            continue
        path = os.path.join(out, f"m{labels}.onnx")
        opts = {"dynamo": True, "opset_version": 18} if a.dynamo else {"dynamo": False, "opset_version": 17}
        torch.onnx.export(m, (ids, mask), path, input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], **opts)
        print(path)


if __name__ == "__main__":
    main()
