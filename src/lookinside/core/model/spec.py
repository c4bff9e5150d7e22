"""What to load, as plain data: no torch here, so the CLI can build it for free."""

from __future__ import annotations

from dataclasses import dataclass

from lookinside.core.errors import BadInput
from lookinside.core.model.ollama import OllamaName
from lookinside.core.rules import check_quantize, check_threads

DEFAULT_MODEL = "microsoft/Phi-3-mini-4k-instruct"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class LoadSpec:
    """What to load and where: the model, device, dtype and attention implementation."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    device_map: str | None = None
    max_memory: dict[int | str, str] | None = None
    trust_remote_code: bool = False
    random_weights: bool = False
    layers: int | None = None  # with random weights: keep only the first N decoder layers
    threads: int | None = None  # CPU threads for torch; None: one per idle core (core/model/threads.py)
    quantize: str | None = None  # one of QUANTIZE (core/model/quantize.py)
    model_named: bool = True  # False when --model was left at its default (a server then picks its only model)

    def __post_init__(self) -> None:
        base, _, index = self.device.partition(":")
        if base not in DEVICES or (index and not (base == "cuda" and index.isdigit())):
            raise BadInput(f"--device must be one of {', '.join(DEVICES)} or cuda:N, not {self.device!r}")
        if self.dtype not in DTYPES:
            raise BadInput(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.attn not in ATTENTIONS:
            raise BadInput(f"--attn must be one of {', '.join(ATTENTIONS)}, not {self.attn!r}")
        if not self.model.strip():
            raise BadInput("--model is empty: give a Hub id, a local directory, a GGUF file, ollama:NAME, or tiny")
        if self.model.startswith("ollama:"):  # a malformed name is refused before anything loads

            OllamaName.parse(self.model.removeprefix("ollama:"))
        if self.layers is not None and self.layers < 1:
            raise BadInput(f"--layers must be at least 1, not {self.layers}")
        check_quantize(self.quantize)
        if self.quantize is not None and self.random_weights:
            raise BadInput("--quantize needs real weights to convert; drop --random-weights")
        check_threads(self.threads)
        if self.layers is not None and not self.random_weights:
            raise BadInput("--layers only works with --random-weights (it shrinks the architecture)")


def parse_max_memory(text: str) -> dict[int | str, str]:
    """`0=20GiB,cpu=64GiB` -> {0: '20GiB', 'cpu': '64GiB'}, accelerate's max_memory."""
    limits: dict[int | str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise BadInput(f"--max-memory wants DEVICE=SIZE pairs such as 0=20GiB,cpu=64GiB, not {part!r}")
        key = key.strip()
        limits[int(key) if key.isdigit() else key] = value.strip()
    return limits
