"""Every view defined once: its request, the core call that answers it, its record, and how it is drawn.

The command line (cli/views.py builds a command from a `View`), the Python API (api.py builds
`li.<view>` from it) and the server (`llm serve` answers `POST /lookinside/v1/views/<name>`
through `answer_record`) are all derived from `VIEWS`, so they take the same arguments, make the
same checks and print the same JSON. A view says what it needs of the model:

- "model": any backend (core/backends/seam.py), a server included: next-token, compare;
- "insides": the weights, for a forward pass with hooks: forward, attention, lens, the interventions;
- "tokenizer": only the tokenizer (the command loads nothing else): tokens;
- "config": only the architecture (the command builds it on the meta device): inspect.

A lookinside server (core/backends/served.py) answers any view itself; another server answers only
"model" views, and the rest are refused in one line (`Backend.view`). Nothing here imports torch or Rich.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from lookinside.core import records
from lookinside.core.backends.seam import Backend, LocalBackend
from lookinside.core.errors import BadInput
from lookinside.core.inside.interventions import records as interventions
from lookinside.core.inside.interventions.requests import AblateRequest, PatchRequest, SteerRequest
from lookinside.core.request import (
    AttentionRequest,
    CompareRequest,
    ForwardRequest,
    InspectRequest,
    LensRequest,
    NextTokenRequest,
    TokensRequest,
)
from lookinside.core.wire import from_wire, to_wire

Needs = Literal["model", "insides", "tokenizer", "config"]


def lazy(module: str, name: str) -> Callable[..., Any]:
    """`module.name`, imported on the first call (views and core functions pull in Rich or torch)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    return call


@dataclass(frozen=True)
class View:
    """One view: `answer(source, request) -> record`, then `draw(record)` for people; for machines the record itself
    is the JSON (core/wire.py's `to_wire`: `--json`, `.to_dict()`, the server's answer).

    `source` is a Backend for "model" views and the loaded model (core.model.loading.LM, or anything with
    its `name`, `tokenizer` and `model`) for the others. `text` names the request's field that the
    command takes as its argument (and as - or --file); `shows` says, for a refusal, what it shows.
    """

    name: str
    short: str  # one line for `llm --help`
    help: str  # the command's whole help
    request: type
    record: type
    answer: Callable[[Any, Any], Any]
    draw: Callable[[Any], Any]
    needs: Needs = "model"
    text: str | None = "prompt"
    shows: str = ""
    # (spec, request) -> (the spec to load here, a note for stderr): what a view changes in how the model loads
    prepare: Callable[[Any, Any], tuple[Any, str | None]] | None = None

    def run(self, source: Any, request: Any) -> Any:
        """The record for `request`, answered by `source`: a backend (core/backends/seam.py), or a model loaded here
        (core.model.loading.LM), its tokenizer alone (`tokens`) or its config on the meta device (`inspect`)."""
        if isinstance(source, Backend):
            return source.view(self, request)
        return self.answer(LocalBackend(source) if self.needs == "model" else source, request)

    def refuse(self) -> NoReturn:
        """Refuse this view of the insides against a server that only generates, in one line."""
        raise BadInput(f"an OpenAI-compatible server does not show {self.shows}: run this view without --endpoint, "
                       "with the model here (--device-map auto or --quantize 4bit when it is large), or against "
                       "`llm serve`, which shows every view")


def _next_token(backend: Backend, request: NextTokenRequest) -> records.NextToken:
    return backend.next_token(request)


VIEWS: dict[str, View] = {view.name: view for view in (
    View("next-token", "The top-k next tokens, with the prompt's tokens and shapes.",
         "Show the most probable next tokens, with the prompt's tokens and the forward pass's shapes.",
         NextTokenRequest, records.NextToken, _next_token,
         lazy("lookinside.ui.next_token", "next_token_view")),
    View("compare", "Greedy decoding beside sampled decoding.",
         "Greedy decoding beside sampled decoding: same prompt, each token coloured by its probability.\n\n"
         "Samples use temperature 1 and no filters unless told otherwise; sample i uses seed --seed + i (a seed is "
         "drawn and shown when --seed is not given), so a comparison can be repeated exactly.",
         CompareRequest, records.Comparison, lazy("lookinside.core.decoding.compare", "compare"),
         lazy("lookinside.ui.compare", "compare_view")),
    View("tokens", "Each token's id and piece (tokenizer only).",
         "Each token of TEXT with its id and piece (loads only the tokenizer).",
         TokensRequest, records.Tokenization, lazy("lookinside.core.decoding.tokens", "tokens_of"),
         lazy("lookinside.ui.tokens", "tokens_view"),
         needs="tokenizer", text="text", shows="the tokenizer's pieces"),
    View("inspect", "The module tree and architecture card (config only).",
         "The module tree and architecture card, built from the config alone (no weights read).",
         InspectRequest, records.Anatomy, lazy("lookinside.core.inside.anatomy", "anatomy_for"),
         lazy("lookinside.ui.anatomy", "anatomy_view"),
         needs="config", text=None, shows="the module tree"),
    View("forward", "The shapes through one forward pass, stage by stage.",
         "The shapes through one forward pass, stage by stage, read with hooks.",
         ForwardRequest, records.ForwardPass, lazy("lookinside.core.inside.hooks", "forward_of"),
         lazy("lookinside.ui.forward", "forward_view"),
         needs="insides", shows="the shapes inside a forward pass"),
    View("attention", "Attention heat maps of one layer.",
         "Attention weights of one layer as heat maps (query rows, key columns, the causal mask dotted).",
         AttentionRequest, records.AttentionMaps, lazy("lookinside.core.inside.attention", "attention_of"),
         lazy("lookinside.ui.attention", "attention_view"),
         needs="insides", shows="attention weights", prepare=lazy("lookinside.core.inside.attention", "prepare")),
    View("lens", "The logit lens: what each layer would predict.",
         "The logit lens: each layer's residual stream through the final norm and LM head.",
         LensRequest, records.LogitLens, lazy("lookinside.core.inside.lens", "logit_lens"),
         lazy("lookinside.ui.lens", "lens_view"),
         needs="insides", shows="each layer's residual stream"),
    View("ablate", "Remove heads or layers: the next-token table before and after.",
         "Remove heads or a layer's part and compare the next-token table before and after, or sweep them all.\n\n"
         "A head is ablated in its slice of the attention output, before the output projection; a layer's attn or "
         "mlp in its output, a block in its contribution to the residual stream.",
         AblateRequest, interventions.AblationResult, lazy("lookinside.core.inside.interventions.ablate", "ablate"),
         lazy("lookinside.ui.interventions", "ablate_view"),
         needs="insides", shows="its heads and layers to ablate"),
    View("patch", "Activation patching: clean activations put into a corrupted run.",
         "Activation patching: the corrupted prompt run with the clean run's activation put back at each "
         "(layer, position).\n\nThe heat map shows the target token's probability per cell; the last layer at the "
         "last position gives back the clean probability. --json's prob[layer][position] counts layer 0 as the "
         "embeddings' output.",
         PatchRequest, interventions.PatchResult, lazy("lookinside.core.inside.interventions.patch", "patch"),
         lazy("lookinside.ui.interventions", "patch_view"),
         needs="insides", text=None, shows="its activations to patch"),
    View("steer", "Add a direction to the residual stream while generating.",
         "Activation addition: generate with and without alpha x (stream of --add - stream of --subtract) added.\n\n"
         "Each text's residual stream is read at --layer at its last position; the difference is added at every "
         "position while generating. Both runs use the same seed (greedy unless --temperature is given).",
         SteerRequest, interventions.SteerResult, lazy("lookinside.core.inside.interventions.steer", "steer"),
         lazy("lookinside.ui.interventions", "steer_view"),
         needs="insides", shows="its residual stream to steer"),
)}


def answer_record(lm: Any, name: str, body: Any) -> dict[str, Any]:
    """A server's answer to `POST /lookinside/v1/views/<name>`: `{"view", "record"}`, the record as core/wire.py's
    `to_wire` makes it, which is also what the command's --json prints: one form on the wire, not two.

    Raises KeyError for an unknown view, BadInput for a body that is not the view's request.
    """
    view = VIEWS[name]
    if not isinstance(body, dict):
        raise BadInput(f"the body must be a JSON object of {view.request.__name__}'s fields")
    record = view.run(LocalBackend(lm), from_wire(view.request, body))
    return {"view": name, "record": to_wire(record)}
