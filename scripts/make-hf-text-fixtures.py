#!/usr/bin/env python3
"""Writes the tests' tiny HuggingFace text-encoder folders and what
PyTorch computes for them: tests/data/hf-text/FAMILY/ for RoBERTa,
XLM-RoBERTa and ELECTRA, each two cross-encoders (`m1.hf`, `m2.hf`:
`*ForSequenceClassification` of 1 and 3 labels, `save_pretrained`
folders), `base.hf` (the bare `*Model`), `input.safetensors` (batch 2,
sequence 12: the first row padded after 9 tokens, as a tokenizer pads)
and `NAME.outputs.safetensors` (HuggingFace's eager attention, float32).

    python3 scripts/make-hf-text-fixtures.py tests/data/hf-text

Needs torch and transformers (PyPI). The files are committed; CI does not
run this.
"""
import os
import sys

import numpy as np
import torch
import transformers as T
from safetensors.numpy import save_file

SEQ, ROWS, KEPT = 12, 2, 9
FAMILIES = {
    # name: (config, model, task model, extra config, pad id, token types)
    "roberta": (T.RobertaConfig, T.RobertaModel, T.RobertaForSequenceClassification, {"type_vocab_size": 1}, 1, False),
    "xlm-roberta": (T.XLMRobertaConfig, T.XLMRobertaModel, T.XLMRobertaForSequenceClassification,
                    {"type_vocab_size": 1}, 1, False),
    "electra": (T.ElectraConfig, T.ElectraModel, T.ElectraForSequenceClassification, {"embedding_size": 8}, 0, True),
}


def main():
    out = sys.argv[1]
    for family, (config, base_model, task_model, extra, pad, types) in FAMILIES.items():
        d = os.path.join(out, family)
        os.makedirs(d, exist_ok=True)
        cfg = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                   max_position_embeddings=20, pad_token_id=pad, attn_implementation="eager", **extra)
        g = torch.Generator().manual_seed(7)
        ids = torch.randint(3, 60, (ROWS, SEQ), generator=g)
        mask = torch.ones(ROWS, SEQ, dtype=torch.long)
        ids[0, KEPT:] = pad
        mask[0, KEPT:] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
        if types:
            tt = torch.zeros(ROWS, SEQ, dtype=torch.long)
            tt[:, SEQ // 2:] = 1
            inputs["token_type_ids"] = tt
        save_file({k: v.numpy() for k, v in inputs.items()}, os.path.join(d, "input.safetensors"))
        for seed, (name, labels) in enumerate([("base", None), ("m1", 1), ("m2", 3)]):
            torch.manual_seed(100 + seed)
            if labels is None:
                m = base_model(config(**cfg))
            else:
                m = task_model(config(num_labels=labels, **cfg))
            m.eval()
            with torch.no_grad():
                # Random LayerNorm and bias values too, so a misplaced one shows.
                for t in m.parameters():
                    t.add_(0.1 * torch.randn(t.shape, generator=g))
                o = m(**inputs)
            m.save_pretrained(os.path.join(d, f"{name}.hf"))
            if labels is None:
                outs = {"last_hidden_state": o.last_hidden_state}
                if getattr(o, "pooler_output", None) is not None:
                    outs["pooler_output"] = o.pooler_output
            else:
                outs = {"logits": o.logits}
            save_file({k: np.ascontiguousarray(v.numpy()) for k, v in outs.items()},
                      os.path.join(d, f"{name}.outputs.safetensors"))
            print(family, name, {k: tuple(v.shape) for k, v in outs.items()})


if __name__ == "__main__":
    main()
