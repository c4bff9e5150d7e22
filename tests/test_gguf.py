"""GGUF files and Ollama's store: the tiny model written as GGUF here (f32 and Q8_0, with the `gguf` package's
writer), loaded back through `--model FILE.gguf` and `--model ollama:NAME`, compared with the safetensors
original; broken files and missing models are one line each."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lookinside.cli.app import app
from lookinside.core import errors
from lookinside.core.inside.predict import next_token
from lookinside.core.model import gguf as gguf_files
from lookinside.core.model import int4_kernel
from lookinside.core.model.loading import load, load_config, load_tokenizer
from lookinside.core.model.ollama import OllamaName, find_model, pulled_models
from lookinside.core.model.packed import PACKED
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import NextTokenRequest
from lookinside.tiny import ASSETS

gguf = pytest.importorskip("gguf")
runner = CliRunner()
PROMPTS = ["The capital of France is", "Hello, world! 1234 ünïcödé 🙂\ttab", "two  spaces\nand a line",
           "<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n"]


def write_gguf(out: Path, qtype: str = "F32", architecture: str = "phi3", tensor_type: str | None = None,
               pad: bool = False) -> Path:
    """The tiny model as llama.cpp lays out a Phi-3 GGUF: its metadata, its vocabulary (padded with [PAD980]...
    to the embedding's 1024 rows as llama.cpp's converter does only with `pad`), merges, chat template, weights."""
    from safetensors.torch import load_file

    config = json.loads((ASSETS / "config.json").read_text())
    vocab = json.loads((ASSETS / "tokenizer.json").read_text())
    weights = load_file(ASSETS / "model.safetensors")
    arch = gguf.MODEL_ARCH.PHI3
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    writer = gguf.GGUFWriter(out, architecture)
    writer.add_name("tiny")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_file_type({"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                          "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}.get(qtype, gguf.LlamaFileType.ALL_F32))
    tokens = {**vocab["model"]["vocab"], **{t["content"]: t["id"] for t in vocab["added_tokens"]}}
    special = {t["content"] for t in vocab["added_tokens"] if t["special"]}
    ordered = sorted(tokens, key=tokens.get)
    ordered += [f"[PAD{i}]" for i in range(len(ordered), config["vocab_size"])] if pad else []
    writer.add_tokenizer_model("llama")
    writer.add_token_list(ordered)
    writer.add_token_scores([0.0] * len(ordered))
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.BYTE if t.startswith("<0x")
                            else gguf.TokenType.UNUSED if t.startswith("[PAD") else gguf.TokenType.NORMAL
                            for t in ordered])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in vocab["model"]["merges"]])
    writer.add_bos_token_id(tokens["<s>"])
    writer.add_eos_token_id(tokens["<|endoftext|>"])
    writer.add_unk_token_id(tokens["<unk>"])
    writer.add_add_bos_token(True)
    writer.add_chat_template((ASSETS / "chat_template.jinja").read_text())
    for name, tensor in weights.items():
        data = tensor.numpy().astype(np.float32)
        kind = getattr(gguf.GGMLQuantizationType, tensor_type or qtype) if data.ndim == 2 else gguf.GGMLQuantizationType.F32
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), data)
        else:
            packed = gguf.quants.quantize(data, kind) if tensor_type is None else np.zeros(
                gguf.quant_shape_to_byte_shape(data.shape, kind), dtype=np.uint8)
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), packed, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def ollama_store(root: Path, blob: Path, name: str = "tiny", tag: str = "latest", namespace: str = "library") -> Path:
    """A store laid out as `ollama pull` leaves it: the manifest names the model layer by its sha256 digest."""
    data = blob.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    template = b"{{ .Prompt }}"
    template_digest = hashlib.sha256(template).hexdigest()
    (root / "blobs" / f"sha256-{template_digest}").write_bytes(template)
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "0" * 64,
                   "size": 2},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)},
            {"mediaType": "application/vnd.ollama.image.template", "digest": f"sha256:{template_digest}",
             "size": len(template)},
        ],
    }
    path = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """tiny-f32.gguf, tiny-q8_0.gguf and tiny-q4_0.gguf, written once."""
    folder = tmp_path_factory.mktemp("gguf")
    return {kind: write_gguf(folder / f"tiny-{kind.lower()}.gguf", kind) for kind in ("F32", "Q8_0", "Q4_0")}


@pytest.fixture(scope="module")
def loaded(files):
    return {kind: load(LoadSpec(model=str(path), device="cpu")) for kind, path in files.items()}


def top(lm, prompt="The capital of France is", k=5):
    return next_token(lm, NextTokenRequest(prompt, top_k=k)).top


def test_f32_gguf_gives_the_same_ids_and_top5_as_the_safetensors_model(tiny, loaded):
    lm = loaded["F32"]
    for prompt in PROMPTS:
        assert lm.tokenizer(prompt).input_ids == tiny.tokenizer(prompt).input_ids, prompt
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    assert lm.tokenizer.apply_chat_template(chat, add_generation_prompt=True) == \
        tiny.tokenizer.apply_chat_template(chat, add_generation_prompt=True)
    mine, theirs = top(lm), top(tiny)
    assert [c.id for c in mine] == [c.id for c in theirs]
    assert mine[0].token == " Paris"
    assert [c.prob for c in mine] == pytest.approx([c.prob for c in theirs], abs=1e-5)
    assert lm.dtype == torch.float32 and lm.source.endswith("tiny-f32.gguf")
    assert lm.end_token_ids == [2, 975, 978]  # the file's eos <|endoftext|>; </s> and <|end|>, as llama.cpp reads them
    assert lm.origin.describe() == "F32 GGUF (4.2 MB), dequantized to float32 (4.2 MB)"


def test_q8_0_gguf_is_close_and_says_what_it_was(tiny, loaded):
    lm = loaded["Q8_0"]
    mine, theirs = top(lm), top(tiny)
    assert mine[0].token == " Paris"
    assert mine[0].prob == pytest.approx(theirs[0].prob, abs=1e-3)
    assert mine[0].prob != theirs[0].prob  # the weights really went through 8 bits
    assert re.fullmatch(r"Q8_0 GGUF \(1\.\d MB\), kept quantized in 1\.\d MB: int8 rows \(re-quantized from Q8_0\) "
                        r"x17; int8 embedding \(Q8_0 as in the file\) x1; float32 activations", lm.origin.describe())
    assert lm.origin.describe() in lm.notes
    dequantized = load(LoadSpec(model=str(lm.source), device="cpu", quantize="float"))
    assert re.fullmatch(r"Q8_0 GGUF \(1\.\d MB\), dequantized to float32 \(4\.2 MB\)", dequantized.origin.describe())


def packed_types(lm) -> Counter:
    return Counter(type(m).__name__ for m in lm.model.modules() if isinstance(m, PACKED))


def test_q4_0_gguf_is_kept_in_int4_at_about_its_file_size_and_says_paris(tiny, loaded, files):
    lm = loaded["Q4_0"]
    assert packed_types(lm) == {"Int4Linear": 17, "PackedEmbedding": 1}  # every matrix, the LM head too
    assert not any(p.dtype != torch.float32 for p in lm.model.parameters())  # only norms are left as parameters
    size = files["Q4_0"].stat().st_size
    assert lm.origin.loaded_bytes < 1.3 * size, (lm.origin.loaded_bytes, size)
    assert re.fullmatch(r"Q4_0 GGUF \(6\d\d\.\d kB\), kept quantized in \d+\.\d kB: int4 \(Q4_0 as in the file\) x17; "
                        r"int4 embedding \(Q4_0 as in the file\) x1; int4 layers: [^;]+; float32 activations",
                        lm.origin.describe())
    assert top(lm)[0].token == " Paris"


def test_kept_int4_computes_what_the_files_own_dequantized_weights_do(files):
    """The values are the file's; only the activations fed to the matmuls are rounded (to int8 per 32 in
    lookinside's int4 kernel, as llama.cpp does: its own KL from the float32 weights on this text reached 3.5e-3;
    to bfloat16 in torch's, with the scales too): the KL from the file's dequantized float32 weights stays small."""
    kept = load(LoadSpec(model=str(files["Q4_0"]), device="cpu"))
    float_ = load(LoadSpec(model=str(files["Q4_0"]), device="cpu", quantize="float"))
    ids = kept.tokenizer("The capital of France is Paris. The capital of Germany is", return_tensors="pt").input_ids
    with torch.inference_mode():
        a = torch.log_softmax(kept.model(ids).logits.float(), -1)
        b = torch.log_softmax(float_.model(ids).logits.float(), -1)
    kl = (b.exp() * (b - a)).sum(-1)  # (1, seq)
    assert 0 < kl.max().item() < (5e-3 if int4_kernel.available() else 1e-3)
    assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_blocks_read_as_values_scales_and_zeros_equal_the_gguf_packages_dequantize(kind):
    from gguf.quants import dequantize, quantize

    from lookinside.core.model import ggml

    weight = np.random.default_rng(0).standard_normal((48, 256)).astype(np.float32)
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    raw = quantize(weight, qtype)
    if kind == "Q8_0":
        values, scales = ggml.q8_0_blocks(raw)
        mine = values.reshape(48, -1, 32) * scales[..., None]
    else:
        values, scales, zeros = ggml.int4_blocks(raw, kind)
        mine = (values.reshape(48, -1, 32).astype(np.float32) - 8) * scales[..., None] + zeros[..., None]
    assert np.array_equal(mine.reshape(48, 256), dequantize(raw, qtype))


def test_q4_k_blocks_read_as_int4_groups_of_32_equal_the_gguf_packages_dequantize():
    from gguf.quants import dequantize

    from lookinside.core.model import ggml

    raw = np.random.default_rng(1).integers(0, 256, (16, 144 * 2), dtype=np.uint8)  # 2 super-blocks a row
    blocks = raw.reshape(-1, 144)
    blocks[:, 0:2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)  # d and dmin: finite
    blocks[:, 2:4] = np.frombuffer(np.float16(0.02).tobytes(), np.uint8)
    values, scales, zeros = ggml.int4_blocks(raw, "Q4_K")
    mine = (values.reshape(16, -1, 32).astype(np.float32) - 8) * scales[..., None] + zeros[..., None]
    assert values.max() == 15 and scales.shape == (16, 16)
    assert np.allclose(mine.reshape(16, 512), dequantize(raw, gguf.GGMLQuantizationType.Q4_K), rtol=0, atol=1e-6)


def test_llamas_row_order_is_undone_on_the_packed_rows():
    """llama.cpp stores llama's q and k rows interleaved per head; transformers' processor undoes that on floats.
    The probe finds the same order, applied to int4 rows before packing."""
    from gguf.quants import dequantize, quantize
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from lookinside.core.model import ggml
    from lookinside.core.model.gguf_packed import _row_order

    weight = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    raw = quantize(weight, gguf.GGMLQuantizationType.Q4_0)
    tensor = SimpleNamespace(name="blk.0.attn_q.weight", shape=(64, 64), data=raw)
    processor = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 4})
    order = _row_order(processor, tensor, {})
    assert order is not None and sorted(order) == list(range(64)) and list(order) != list(range(64))
    values, scales, zeros = (a[order] for a in ggml.int4_blocks(raw, "Q4_0"))
    mine = ((values.reshape(64, -1, 32).astype(np.float32) - 8) * scales[..., None] + zeros[..., None]).reshape(64, 64)
    theirs = processor.process(weights=dequantize(raw, gguf.GGMLQuantizationType.Q4_0), name=tensor.name).weights
    assert np.array_equal(mine, theirs)
    assert _row_order(processor, SimpleNamespace(name="blk.0.ffn_up.weight", shape=(64, 64)), {}) is None


def test_five_bit_matrices_are_re_quantized_to_int8_and_say_so(tmp_path):
    path = write_gguf(tmp_path / "tiny-q5_0.gguf", "F32", tensor_type="Q5_0")  # zero blocks: the layout is what counts
    lm = load(LoadSpec(model=str(path), device="cpu"))
    assert packed_types(lm) == {"Int8Linear": 17, "PackedEmbedding": 1}
    assert "int8 rows (re-quantized from Q5_0) x17" in lm.origin.describe()
    assert "int8 embedding (re-quantized from Q5_0) x1" in lm.origin.describe()


def test_every_view_runs_on_a_gguf_kept_in_int4(files):
    """The hooks see float activations: each view answers on the packed model as on the float one."""
    model = ["--model", str(files["Q4_0"]), "--device", "cpu", "--json"]
    text = "The capital of France is"
    commands = [["next-token", text], ["tokens", text], ["forward", text], ["attention", text, "--layer", "1"],
                ["lens", text], ["ablate", text, "--head", "0.1"], ["steer", text, "--add", " Berlin", "--layer", "2",
                                                                   "-n", "3"],
                ["patch", "--clean", text, "--corrupt", "The capital of Spain is"], ["generate", text, "-n", "4"]]
    for command in commands:
        result = runner.invoke(app, [*command, *model])
        assert result.exit_code == 0, (command, result.output)
        assert result.stdout.strip(), command


def test_interventions_leave_the_packed_model_as_it_was(loaded):
    lm = loaded["Q4_0"]
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        before = lm.model(ids).logits
    from lookinside.api import ablate, steer

    ablate(lm, "The capital of France is", heads=["0.1", "1.2"])
    steer(lm, "The capital of France is", add=" Berlin", layer=2, max_new_tokens=2)
    with torch.inference_mode():
        assert torch.equal(before, lm.model(ids).logits)


def test_diff_against_a_q4_0_gguf(files):
    text = "The capital of France is Paris. The capital of Germany is Berlin."
    result = runner.invoke(app, ["diff", text, "--model", "tiny", "--against", str(files["Q4_0"]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["how_b"] == "float32, sdpa, from Q4_0 GGUF"
    assert 0 < report["mean_kl"] < 0.05 and report["same_top1"] >= 0.9


def test_the_vocabulary_is_sized_by_the_embedding_not_the_token_list(files):
    file = gguf_files.read(files["F32"])
    assert (file.tokens, file.embedding_rows, file.context_length, file.architecture) == (980, 1024, 512, "phi3")
    source, config = load_config(LoadSpec(model=str(files["F32"])))
    assert config.vocab_size == 1024 and source == str(files["F32"])
    assert len(load_tokenizer(LoadSpec(model=str(files["F32"])))) == 980


def test_cli_next_token_on_a_gguf_file(files):
    result = runner.invoke(app, ["next-token", "The capital of France is", "--model", str(files["Q8_0"]),
                                 "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["top"][0]["token"] == " Paris"
    assert re.search(r"^Q8_0 GGUF \(1\.\d MB\), kept quantized in 1\.\d MB: int8 rows ", result.stderr, re.MULTILINE)


def test_recognised_by_its_magic_bytes_not_its_name(files, tmp_path):
    blob = tmp_path / "sha256-0123"
    shutil.copy(files["F32"], blob)
    assert gguf_files.locate(str(blob)) == blob
    assert gguf_files.locate(str(ASSETS / "config.json")) is None  # some other file: not ours to judge
    assert gguf_files.locate("tiny") is None


def test_ollama_name_fills_in_like_ollama():
    assert OllamaName.parse("phi3") == OllamaName("registry.ollama.ai", "library", "phi3", "latest")
    assert OllamaName.parse("phi3:mini+Q4_0") == OllamaName("registry.ollama.ai", "library", "phi3", "mini")
    assert OllamaName.parse("me/tiny:q8") == OllamaName("registry.ollama.ai", "me", "tiny", "q8")
    assert OllamaName.parse("host.io/me/tiny").short() == "host.io/me/tiny:latest"
    with pytest.raises(errors.BadInput, match="not an Ollama model name"):
        OllamaName.parse("a/b/c/d")


def test_ollama_store_finds_the_model_layer(files, tmp_path, monkeypatch, tiny):
    root = ollama_store(tmp_path / "models", files["Q8_0"])
    ollama_store(root, files["F32"], name="tiny", tag="f32")
    ollama_store(root, files["F32"], name="other", namespace="me")
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    assert find_model("tiny").read_bytes() == files["Q8_0"].read_bytes()
    assert find_model("tiny:f32").read_bytes() == files["F32"].read_bytes()
    assert pulled_models(root) == ["ollama:me/other:latest", "ollama:tiny:f32", "ollama:tiny:latest"]
    lm = load(LoadSpec(model="ollama:tiny:f32", device="cpu"))
    assert lm.tokenizer("The capital of France is").input_ids == tiny.tokenizer("The capital of France is").input_ids
    assert [c.id for c in top(lm)] == [c.id for c in top(tiny)]
    result = runner.invoke(app, ["next-token", "The capital of France is", "--model", "ollama:tiny", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.stdout and "Q8_0 GGUF" in result.stderr


def test_ollama_model_not_pulled_lists_those_that_are(files, tmp_path, monkeypatch):
    root = ollama_store(tmp_path / "models", files["Q8_0"])
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    result = runner.invoke(app, ["next-token", "x", "--model", "ollama:llama3.2"])
    assert result.exit_code == 1
    line, = result.stderr.strip().splitlines()
    assert "ollama:llama3.2 is not in Ollama's store" in line and "pulled here: ollama:tiny:latest" in line
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "empty"))
    with pytest.raises(errors.ModelNotFound, match="no model is pulled in"):
        find_model("tiny")


def test_ollama_blob_missing_is_one_line(files, tmp_path, monkeypatch):
    root = ollama_store(tmp_path / "models", files["Q8_0"])
    for blob in (root / "blobs").iterdir():
        blob.unlink()
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    with pytest.raises(errors.CorruptWeights, match="is missing"):
        find_model("tiny")


def broken(tmp_path: Path, files, how: str) -> Path:
    path = tmp_path / f"{how}.gguf"
    data = files["Q8_0"].read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "header-only":
        path.write_bytes(data[:100])
    elif how == "wrong-magic":
        path.write_bytes(b"GGML" + data[4:])
    elif how == "unknown-architecture":
        write_gguf(path, "F32", architecture="mamba9")
    elif how == "unreadable-type":
        write_gguf(path, "F32", tensor_type="Q8_1")
    return path


@pytest.mark.parametrize(("how", "code", "message"), [
    ("truncated", 1, "the GGUF file is damaged or truncated"),
    ("header-only", 1, "the GGUF file is damaged or truncated"),
    ("wrong-magic", 1, "is not a GGUF file: it does not start with the bytes GGUF ('GGML' instead)"),
    ("unknown-architecture", 1, "cannot load GGUF architecture 'mamba9'; it reads "),
    ("unreadable-type", 1, "tensors of type Q8_1 cannot be dequantized by gguf"),
    ("missing", 1, "no such file"),
])
def test_broken_gguf_is_one_line(tmp_path, files, how, code, message):
    path = broken(tmp_path, files, how)
    result = runner.invoke(app, ["next-token", "x", "--model", str(path)])
    assert result.exit_code == code
    line, = result.stderr.strip().splitlines()
    assert message in line
    assert "Traceback" not in result.output


def test_unknown_architecture_names_what_would_work(tmp_path, files):
    with pytest.raises(gguf_files.UnsupportedGguf, match=r"it reads .*llama.*phi3.*load the original"):
        gguf_files.check_supported(gguf_files.read(broken(tmp_path, files, "unknown-architecture")), "x")


def test_without_the_gguf_package_the_error_names_the_extra(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(errors.LookinsideError, match=r"needs the gguf package: pip install 'lookinside\[gguf\]'"):
        gguf_files.open_file(str(files["F32"]))


def test_quantize_and_random_weights_are_refused_for_a_gguf(files):
    with pytest.raises(errors.BadInput, match="a GGUF file keeps its own quantization"):
        load(LoadSpec(model=str(files["F32"]), quantize="int8"))
    with pytest.raises(errors.BadInput, match="a GGUF file brings its weights"):
        load(LoadSpec(model=str(files["F32"]), random_weights=True))


def test_diff_shows_what_the_quantization_costs_per_token(tmp_path):
    padded = write_gguf(tmp_path / "tiny-q8_0-padded.gguf", "Q8_0", pad=True)
    text = "The capital of France is Paris. The capital of Germany is Berlin."
    result = runner.invoke(app, ["diff", text, "--model", "tiny", "--against", str(padded), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["how_b"] == "float32, sdpa, from Q8_0 GGUF"
    assert report["tokens"] == 15
    assert 0 < report["mean_kl"] < 1e-3 and report["same_top1"] == 1.0
    itself = runner.invoke(app, ["diff", text, "--model", "tiny", "--against", str(write_gguf(tmp_path / "f.gguf")),
                                 "--json"])
    assert json.loads(itself.stdout)["max_kl"] < 1e-9  # f32: the same weights, the same numbers


def test_the_sentencepiece_model_for_llamacpps_converter_splits_like_the_tiny_tokenizer(tiny):
    """scripts/tiny_for_llamacpp.py gives llama.cpp's converter the vocabulary it reads (a SentencePiece model):
    SentencePiece must split every text of the tiny model's corpus into the same ids as the tokenizer.json."""
    import importlib.util

    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    from lookinside.tiny.corpus import build_corpus

    script = Path(__file__).resolve().parents[1] / "scripts" / "tiny_for_llamacpp.py"
    spec = importlib.util.spec_from_file_location("tiny_for_llamacpp", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    processor = spm.SentencePieceProcessor(model_proto=module.sentencepiece_model(ASSETS / "tokenizer.json"))
    texts = build_corpus().texts + PROMPTS[:3]
    assert len(texts) > 100
    for text in texts:
        assert processor.encode(text) == tiny.tokenizer(text, add_special_tokens=False).input_ids, text
