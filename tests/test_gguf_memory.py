"""A GGUF kept quantized takes about its file's bytes: the readers are gone after the load, the packed weights
are as big as the file's tensors (the embedding to the byte), and no float copy of a matrix stays behind."""

from __future__ import annotations

import weakref

import pytest
import torch

from lookinside.core.model.loading import load
from lookinside.core.model.packed import PackedEmbedding
from lookinside.core.model.quantize import stored_bytes
from lookinside.core.model.spec import LoadSpec
from tests.test_gguf import write_gguf

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf-memory")
    return {kind: write_gguf(folder / f"tiny-{kind.lower()}.gguf", kind) for kind in ("Q8_0", "Q4_0")}


def tensor_bytes(path) -> dict[str, int]:
    return {tensor.name: int(tensor.n_bytes) for tensor in gguf.GGUFReader(path).tensors}


def test_every_gguf_reader_the_load_opens_is_gone_after_it(files, monkeypatch):
    """Ours (the header, the weights) and transformers' (config, tokenizer): none, nor its memory map, outlives
    the load."""
    readers: list[weakref.ref] = []
    init = gguf.GGUFReader.__init__

    def remember(self, *args, **kwargs):
        readers.append(weakref.ref(self))
        init(self, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFReader, "__init__", remember)
    lm = load(LoadSpec(model=str(files["Q4_0"]), device="cpu"))
    assert len(readers) >= 2  # the header check and the weights at least
    assert [ref() for ref in readers] == [None] * len(readers)
    assert lm.model.get_input_embeddings() is not None


@pytest.mark.parametrize("kind", ["Q4_0", "Q8_0"])
def test_the_packed_weights_take_about_the_files_tensor_bytes(files, kind):
    lm = load(LoadSpec(model=str(files[kind]), device="cpu"))
    in_file = tensor_bytes(files[kind])
    table = lm.model.get_input_embeddings()
    assert isinstance(table, PackedEmbedding)
    stored = sum(buffer.nbytes for buffer in table.buffers())
    assert stored == in_file["token_embd.weight"]  # the file's own bytes: no float copy, no wider scales
    # int4: a bfloat16 scale and zero per 32 weights where Q4_0 has one float16 scale (20 bytes for 18);
    # int8 rows: one scale per row where Q8_0 has one per 32 weights
    assert sum(in_file.values()) * 0.9 < stored_bytes(lm.model) < sum(in_file.values()) * 1.12
    floats = [name for name, p in lm.model.named_parameters() if p.dim() > 1]
    assert floats == []  # every matrix packed: only norms (and biases) are float


@pytest.mark.parametrize("kind", ["Q4_0", "Q8_0"])
def test_the_packed_embedding_gives_the_files_own_rows(files, kind):
    """Kept at the file's bytes (float16 scales, symmetric groups without offsets), a lookup is exact."""
    from gguf import dequantize

    lm = load(LoadSpec(model=str(files[kind]), device="cpu"))
    tensor = next(t for t in gguf.GGUFReader(files[kind]).tensors if t.name == "token_embd.weight")
    expected = torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy())  # (rows, dim)
    ids = torch.tensor([[0, 1, 345, 1023]])
    table = lm.model.get_input_embeddings()
    assert table.scales.dtype == torch.float16 and table.offsets is None
    assert torch.equal(table(ids)[0], expected[ids[0]].float())


def test_an_asymmetric_embedding_keeps_its_offsets():
    """Q4_1-like groups (w = q * scale + offset) keep their offsets, in float32 where float16 would round them."""
    values = torch.randint(0, 16, (4, 64))
    scales = torch.rand(4, 2) + 0.1
    offsets = torch.rand(4, 2) - 0.5
    table = PackedEmbedding.from_values(values, scales, offsets, 4, torch.float32)
    assert table.scales.dtype == torch.float32 and table.offsets.dtype == torch.float32
    expected = values.float().unflatten(-1, (2, 32)) * scales[..., None] + offsets[..., None]  # (4, 2, 32)
    assert torch.allclose(table(torch.arange(4)), expected.flatten(-2))
