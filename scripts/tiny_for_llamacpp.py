"""The built-in tiny model for llama.cpp: a directory its converter accepts, or a GGUF file it serves.

llama.cpp's `convert_hf_to_gguf.py` reads a Phi-3 model's vocabulary only from a SentencePiece
`tokenizer.model` (or, for Phi-4, a GPT-2 tokenizer); the tiny model ships only `tokenizer.json`.
Its tokenizer is SentencePiece-style BPE (Metaspace, byte fallback), so this writes the same
vocabulary as a SentencePiece BPE model: every piece in id order, the merged pieces scored by the
rank of the merge that makes them (SentencePiece merges the highest score first), bytes as BYTE,
the special tokens as CONTROL. The weights and template are copied.

The chat markers need one more thing. tokenizer.json strips the whitespace after `<|user|>`,
`<|assistant|>`, `<|end|>` and `<|system|>` (their `rstrip`), and a GGUF has no field for that:
llama.cpp gives its control tokens that stripping only in a model whose `general.name` says
"phi3" or "phi-3" (llama-vocab.cpp). Without it, "<|user|>\nWhat is ..." is 18 tokens to llama.cpp
instead of the model's 10, and the model answers nonsense. So the copy's config names the model
`lookinside/tiny-phi3`, which the converter writes as "Tiny Phi3", and `--gguf` writes that name.

    python scripts/tiny_for_llamacpp.py /tmp/tiny-hf          # for llama.cpp's converter:
    python convert_hf_to_gguf.py /tmp/tiny-hf --outtype q8_0 --outfile /tmp/tiny-q8_0.gguf
    python scripts/tiny_for_llamacpp.py --gguf /tmp/tiny.gguf # or a float32 GGUF written here, no converter

`--gguf` takes the weights and hyperparameters from scripts/hf_to_gguf.py and writes the vocabulary
as the converter does (this SentencePiece model's pieces, scores and types; the special tokens as
CONTROL; padding to the embedding's rows as UNUSED), with the chat template and a BOS, as the
converter does. Needs `sentencepiece` and `protobuf` (the model format), and `gguf` for `--gguf`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from lookinside.tiny import ASSETS

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6  # sentencepiece_model.proto's ModelProto.SentencePiece.Type
NAME_OR_PATH = "lookinside/tiny-phi3"  # the converter's general.name "Tiny Phi3": llama.cpp then strips as Phi-3 does
GGUF_NAME = "Tiny Phi3"


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


def prepare(out: Path) -> None:
    """Copy the tiny model to `out` with a tokenizer.model, named so that llama.cpp treats its markers as Phi-3's."""
    shutil.copytree(ASSETS, out)
    (out / "tokenizer.model").write_bytes(sentencepiece_model(out / "tokenizer.json"))
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "_name_or_path": NAME_OR_PATH}, indent=2) + "\n")


def write_vocabulary(writer: Any, model_dir: Path, rows: int) -> None:
    """The tokenizer as llama.cpp's converter writes a Phi-3 one from this directory (conversion/phi.py)."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as spm

    proto = spm.ModelProto()
    proto.ParseFromString((model_dir / "tokenizer.model").read_bytes())
    tokens = [f"[PAD{i}]" for i in range(rows)]
    scores, types = [-10000.0] * rows, [int(gguf.TokenType.UNUSED)] * rows
    for i, piece in enumerate(proto.pieces):
        tokens[i], scores[i], types[i] = piece.piece, piece.score, piece.type
    data = json.loads((model_dir / "tokenizer.json").read_text())
    for added in data["added_tokens"]:  # as the converter reads them: special ones are CONTROL, scored -1000
        tokens[added["id"]], scores[added["id"]] = added["content"], -1000.0
        types[added["id"]] = int(gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED)
    config = json.loads((model_dir / "config.json").read_text())
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(True)  # as the model here reads a prompt: <s> first
    writer.add_add_sep_token(False)
    writer.add_chat_template((model_dir / "chat_template.jinja").read_text())


def write_gguf(out: Path) -> Path:
    """The tiny model as a float32 GGUF llama.cpp serves: scripts/hf_to_gguf.py's weights and hyperparameters, with
    the converter's vocabulary, template and BOS, and a name llama.cpp reads as Phi-3's (see the module docstring)."""
    import gguf

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hf_to_gguf

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "tiny"
        prepare(model_dir)
        reader = gguf.GGUFReader(hf_to_gguf.convert(model_dir, Path(tmp) / "plain.gguf", "f32"))
        writer = gguf.GGUFWriter(str(out), str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents()))
        for field in reader.fields.values():  # hf_to_gguf's hyperparameters; its vocabulary and name are replaced
            if field.name.startswith(("GGUF.", "tokenizer.")) or field.name in (gguf.Keys.General.ARCHITECTURE,
                                                                               gguf.Keys.General.NAME):
                continue
            array = field.types[0] == gguf.GGUFValueType.ARRAY
            writer.add_key_value(field.name, field.contents(), field.types[0],
                                 sub_type=field.types[-1] if array else None)
        writer.add_name(GGUF_NAME)
        write_vocabulary(writer, model_dir, _rows(reader))
        for tensor in reader.tensors:
            writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                                   tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(tensor.data)
        writer.close()
    return out


def _rows(reader: Any) -> int:
    """The embedding's rows: the vocabulary is padded to them, as llama.cpp wants."""
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return int(embedding.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", help="directory to create for the converter (must not exist)")
    parser.add_argument("--gguf", type=Path, metavar="FILE", help="write a float32 GGUF here instead")
    args = parser.parse_args()
    if (args.out is None) == (args.gguf is None):
        parser.error("give a directory for the converter, or --gguf FILE")
    if args.gguf is not None:
        print(f"{write_gguf(args.gguf)}: the tiny model as a float32 GGUF for llama.cpp")
        return
    prepare(args.out)
    print(f"{args.out}: the tiny model with a SentencePiece tokenizer.model for llama.cpp's converter")


if __name__ == "__main__":
    main()
