"""Copy the built-in tiny model into a directory that llama.cpp's converter accepts.

llama.cpp's `convert_hf_to_gguf.py` reads a Phi-3 model's vocabulary only from a SentencePiece
`tokenizer.model` (or, for Phi-4, a GPT-2 tokenizer); the tiny model ships only `tokenizer.json`.
Its tokenizer is SentencePiece-style BPE (Metaspace, byte fallback), so this writes the same
vocabulary as a SentencePiece BPE model: every piece in id order, the merged pieces scored by the
rank of the merge that makes them (SentencePiece merges the highest score first), bytes as BYTE,
the special tokens as CONTROL. Nothing else changes: the weights, config and template are copied.

    python scripts/tiny_for_llamacpp.py /tmp/tiny-hf
    python convert_hf_to_gguf.py /tmp/tiny-hf --outtype q8_0 --outfile /tmp/tiny-q8_0.gguf

Needs the `sentencepiece` package (and `protobuf`, which its model format uses).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lookinside.tiny import ASSETS

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6  # sentencepiece_model.proto's ModelProto.SentencePiece.Type


def sentencepiece_model(tokenizer_json: Path) -> bytes:
    """The tokenizer.json's BPE vocabulary and merge order as a serialized SentencePiece ModelProto."""
    from sentencepiece import sentencepiece_model_pb2 as spm

    data = json.loads(tokenizer_json.read_text())
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    specials = {token["content"] for token in data["added_tokens"] if token["special"]}
    vocab.update({token["content"]: token["id"] for token in data["added_tokens"]})
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["model"]["merges"]]
    rank = {"".join(pair): index for index, pair in reversed(list(enumerate(merges)))}  # first merge wins
    proto = spm.ModelProto()
    for piece, _ in sorted(vocab.items(), key=lambda item: item[1]):
        entry = proto.pieces.add(piece=piece, score=-float(rank[piece]) if piece in rank else 0.0)
        entry.type = (UNKNOWN if piece == "<unk>" else CONTROL if piece in specials
                      else BYTE if piece.startswith("<0x") and len(piece) == 6 else NORMAL)
    proto.trainer_spec.model_type = spm.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(vocab)
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, 1, 2
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to create (must not exist)")
    out = parser.parse_args().out
    shutil.copytree(ASSETS, out)
    (out / "tokenizer.model").write_bytes(sentencepiece_model(out / "tokenizer.json"))
    print(f"{out}: the tiny model with a SentencePiece tokenizer.model for llama.cpp's converter")


if __name__ == "__main__":
    main()
