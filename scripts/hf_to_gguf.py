"""Write a Phi-3 (or Llama) checkpoint of this checkout as a GGUF file llama.cpp loads, with the `gguf` package.

Used by scripts/bench_peers.py, so that llama.cpp runs the very weights `llm bench` runs. Two things
llama.cpp's own converter does not do for these models, done here:

- the vocabulary is padded to the embedding's rows (the tiny model has 980 tokens and 1,024 rows,
  Phi-3-mini 32,011 tokens and 32,064 rows): llama.cpp refuses a vocabulary shorter than the table;
- the vocabulary is built from tokenizer.json (its BPE vocab and added tokens), as a SentencePiece-style
  ("llama") vocabulary: Phi-3's checkout carries no tokenizer.model. The benchmark feeds token ids, so
  the vocabulary must only be complete and well-formed, never used to tokenize.

Whether a prompt starts with `<s>` is written as the Hugging Face tokenizer does it (add_bos_token),
so that a GGUF tokenized from text (`llm ... --model OUT.gguf`, llama.cpp's own prompt) sees the
same tokens and gives the same probabilities as the checkout. The script prints what it wrote.

    python scripts/hf_to_gguf.py MODEL_DIR OUT.gguf [--type f32|bf16|q8_0|q4_0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TYPES = ("f32", "bf16", "q8_0", "q4_0")
LAYER_NAMES = {  # HF name inside model.layers.N -> GGUF name inside blk.N
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",  # Phi-3 keeps gate and up in one matrix, as llama.cpp's phi3 does
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def gguf_name(name: str) -> str:
    """The GGUF tensor name for a Hugging Face one."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    parts = name.split(".")
    if parts[:2] == ["model", "layers"] and ".".join(parts[3:]) in LAYER_NAMES:
        return f"blk.{parts[2]}.{LAYER_NAMES['.'.join(parts[3:])]}"
    raise ValueError(f"no GGUF name for tensor {name!r}")


def vocabulary(model_dir: Path, rows: int) -> tuple[list[str], list[float], list[int], dict[str, int]]:
    """Tokens, scores and types from tokenizer.json, padded with unused tokens to `rows`; and the special ids."""
    import gguf

    data = json.loads((model_dir / "tokenizer.json").read_text())
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in data["model"]["vocab"].items()}
    for added in data.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    if max(by_id) >= rows:
        raise ValueError(f"the tokenizer has id {max(by_id)} but the embedding only {rows} rows")
    tokens, scores, types = [], [], []
    for i in range(rows):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        if kind == gguf.TokenType.NORMAL and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            kind = gguf.TokenType.BYTE  # byte-fallback tokens, as SentencePiece marks them
        tokens.append(text)
        scores.append(-float(i))  # merge order stands in for SentencePiece's scores
        types.append(int(kind))
    config = json.loads((model_dir / "tokenizer_config.json").read_text()) if (
        model_dir / "tokenizer_config.json").exists() else {}
    ids = {t: i for i, (t, _) in by_id.items()}
    special = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value in ids:
            special[key] = ids[value]
    return tokens, scores, types, special


def adds_bos(model_dir: Path, bos_id: int | None) -> bool:
    """Whether the checkout's tokenizer starts every prompt with <s> (what the model was trained to see)."""
    from transformers import AutoTokenizer

    if bos_id is None:
        return False
    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode("x")
    return bool(ids) and ids[0] == bos_id


def convert(model_dir: Path, out: Path, kind: str = "f32") -> Path:
    """Write `model_dir`'s config, vocabulary and weights (safetensors) to `out` as GGUF of `kind`."""
    import gguf
    import torch
    from safetensors.torch import load_file

    if kind not in TYPES:
        raise ValueError(f"--type must be one of {', '.join(TYPES)}")
    config = json.loads((model_dir / "config.json").read_text())
    arch = {"phi3": "phi3", "llama": "llama"}.get(config["model_type"])
    if arch is None:
        raise ValueError(f"model type {config['model_type']!r}: only phi3 and llama are converted")
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(file))
    if "lm_head.weight" not in weights:  # tied embeddings
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    rows = weights["model.embed_tokens.weight"].shape[0]
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type") not in ("default", None):
        raise ValueError("scaled RoPE (longrope, yarn ...) is not converted here")

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(model_dir.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    if arch == "phi3":
        writer.add_rope_scaling_orig_ctx_len(config.get("original_max_position_embeddings",
                                                        config["max_position_embeddings"]))
        if config.get("sliding_window"):
            writer.add_sliding_window(config["sliding_window"])
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[kind])
    tokens, scores, types, special = vocabulary(model_dir, rows)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("unk_token", writer.add_unk_token_id), ("pad_token", writer.add_pad_token_id)):
        if key in special:
            add(special[key])
    bos = adds_bos(model_dir, special.get("bos_token"))
    writer.add_add_bos_token(bos)  # as the checkout's tokenizer; the benchmark feeds ids, the BOS among them
    for name, tensor in weights.items():
        array = tensor.float().numpy()
        if kind == "f32" or array.ndim == 1:  # norms stay float32, as llama.cpp's converter keeps them
            writer.add_tensor(gguf_name(name), array.astype(np.float32))
            continue
        qtype = getattr(gguf.GGMLQuantizationType, kind.upper())
        writer.add_tensor(gguf_name(name), gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    padded = sum(t == int(gguf.TokenType.UNUSED) for t in types)
    print(f"wrote {out}: {arch}, {config['num_hidden_layers']} blocks, {len(weights)} tensors as {kind}; "
          f"{rows - padded} tokens (+{padded} unused to fill the embedding's {rows} rows); "
          f"prompts start with <s>: {'yes' if bos else 'no'}, as the checkout's tokenizer does", file=sys.stderr)
    return out


def main() -> None:
    """Convert MODEL_DIR to OUT.gguf; the path on stdout, what was written on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--type", choices=TYPES, default="f32")
    args = parser.parse_args()
    print(convert(args.model_dir, args.out, args.type))


if __name__ == "__main__":
    main()
