"""Ollama's local model store: `ollama:NAME[:TAG]` -> the GGUF blob Ollama pulled, read in place.

Ollama keeps a manifest per model at `manifests/HOST/NAMESPACE/MODEL/TAG` (JSON, an OCI image manifest)
and the files it lists under `blobs/sha256-HEX`; the layer whose mediaType is
`application/vnd.ollama.image.model` is the GGUF file. A name fills in like Ollama's own
(`types/model/name.go`): host `registry.ollama.ai`, namespace `library`, tag `latest`, so `phi3`,
`phi3:mini`, `user/model:tag` and `host/user/model:tag` all work. The store is `$OLLAMA_MODELS`, else
`~/.ollama/models` (the home folder on Windows too; Linux's system service keeps it under
`/usr/share/ollama/.ollama/models`). Nothing is downloaded and Ollama need not be running.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lookinside.core import errors

HOST, NAMESPACE, TAG = "registry.ollama.ai", "library", "latest"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
LINUX_SERVICE_STORE = Path("/usr/share/ollama/.ollama/models")


@dataclass(frozen=True)
class OllamaName:
    """A model name with Ollama's defaults filled in."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> OllamaName:
        """`[host/][namespace/]model[:tag]`, as `ollama pull` takes it (a +build or @digest suffix is dropped)."""
        text = text.strip().removeprefix("https://").removeprefix("http://").split("@")[0].split("+")[0]
        path, _, tag = text.rpartition(":") if ":" in text.rpartition("/")[2] else (text, "", "")
        parts = path.split("/")
        if not all(parts) or len(parts) > 3 or not tag and text.endswith(":"):
            raise errors.BadInput(f"--model ollama:{text}: not an Ollama model name like phi3, phi3:mini or "
                                  "user/model:tag")
        host, namespace = (parts[0], parts[1]) if len(parts) == 3 else (HOST, parts[0] if len(parts) == 2 else NAMESPACE)
        return cls(host=host, namespace=namespace, model=parts[-1], tag=tag or TAG)

    def short(self) -> str:
        """How `ollama list` shows it: without the default host and namespace."""
        prefix = "" if (self.host, self.namespace) == (HOST, NAMESPACE) else (
            f"{self.namespace}/" if self.host == HOST else f"{self.host}/{self.namespace}/")
        return f"{prefix}{self.model}:{self.tag}"


def store() -> Path:
    """Where Ollama keeps its models: $OLLAMA_MODELS, else the default for this platform."""
    configured = os.environ.get("OLLAMA_MODELS", "").strip().strip("\"'")
    if configured:
        return Path(configured).expanduser()
    home = Path.home() / ".ollama" / "models"
    if sys.platform.startswith("linux") and not home.is_dir() and LINUX_SERVICE_STORE.is_dir():
        return LINUX_SERVICE_STORE
    return home


def find_model(text: str) -> Path:
    """The GGUF blob of `ollama:text`; a model that is not pulled is one line listing those that are."""
    name = OllamaName.parse(text)
    root = store()
    manifest = _manifest_path(root, name)
    if manifest is None:
        pulled = pulled_models(root)
        have = f"pulled here: {', '.join(pulled)}" if pulled else f"no model is pulled in {root}"
        raise errors.ModelNotFound(f"ollama:{text} is not in Ollama's store ({root}); {have}; "
                                   f"run `ollama pull {name.short()}` or set OLLAMA_MODELS")
    return _model_blob(root, manifest, text)


def pulled_models(root: Path) -> list[str]:
    """Every model with a manifest in the store, as `ollama:NAME:TAG`."""
    base = root / "manifests"
    if not base.is_dir():
        return []
    names = []
    for manifest in sorted(p for p in base.glob("*/*/*/*") if p.is_file()):
        host, namespace, model, tag = manifest.relative_to(base).parts
        names.append("ollama:" + OllamaName(host, namespace, model, tag).short())
    return sorted(names)


def _manifest_path(root: Path, name: OllamaName) -> Path | None:
    parts = (name.host, name.namespace, name.model, name.tag)
    for candidate in (parts, tuple(part.lower() for part in parts)):  # newer Ollamas write lower case
        path = root.joinpath("manifests", *candidate)
        if path.is_file():
            return path
    return None


def _model_blob(root: Path, manifest: Path, text: str) -> Path:
    try:
        layers = json.loads(manifest.read_text()).get("layers") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise errors.CorruptWeights(f"ollama:{text}: its manifest {manifest} is not JSON Ollama wrote") from exc
    digests = [layer.get("digest", "") for layer in layers if layer.get("mediaType") == MODEL_MEDIA_TYPE]
    if not digests:
        kinds = ", ".join(sorted({str(layer.get("mediaType")) for layer in layers})) or "none"
        raise errors.NotACausalLM(f"ollama:{text} has no model weights layer ({MODEL_MEDIA_TYPE}); its layers: {kinds}")
    blob = root / "blobs" / digests[0].replace(":", "-")
    if not blob.is_file():
        raise errors.CorruptWeights(f"ollama:{text}: its manifest names {digests[0]}, but {blob} is missing "
                                    "(an interrupted pull? run `ollama pull` again)")
    return blob
