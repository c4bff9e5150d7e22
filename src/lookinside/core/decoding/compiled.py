"""The decode step compiled: torch.compile over one token's forward with a static KV cache (`--compile`).

A small model spends most of a decode step in Python between kernels (transformers' modules, their
hooks and checks: the tiny model 2 ms a token for well under 1 ms of kernels); compiled, that Python
runs once at trace time. `Compiled.for_model(lm)` holds one compiled step per model, and one static
cache per length, reused run after run: the length is rounded up to a power of two (at least
`MIN_CACHE`), so runs of different lengths share it and the step compiles once, at the first call,
and never again (`dynamic=False`: every shape is the same at every step; the position lives in the
cache's tensors). On CUDA the compiled step replays CUDA graphs ("reduce-overhead").

When compiling fails (no C compiler for inductor, a model that does not trace as one graph), or a run
passes the model's sliding window, the run goes on eagerly and `note` says why in one line; the
model is not compiled again in this process.

On the CPU a plain greedy run replays its graph (`Replay`): once two steps of the run passed dynamo's guards with
the same inputs, the rest call inductor's compiled graph directly with those inputs, skipping dynamo's frame
wrapper, its guards and its input-gathering bytecode; a hook registered or a parameter replaced since then puts the
step back through the guards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.hooks import RemovableHandle

from lookinside.core.decoding.step import cache_argument, observation

if TYPE_CHECKING:
    from transformers import PretrainedConfig, StaticCache

    from lookinside.core.model.loading import LM

MIN_CACHE = 256


def cache_length(needed: int, context: int) -> int:
    """`needed` rounded up to a power of two, at least `MIN_CACHE`, at most the context (never below `needed`)."""
    length = MIN_CACHE
    while length < needed:
        length *= 2
    return max(needed, min(length, context))


def sliding_window(config: PretrainedConfig) -> int | None:
    """The model's attention window, when it has one."""
    window = getattr(config.get_text_config(), "sliding_window", None)
    return window if isinstance(window, int) and window > 0 else None


def run_cache_length(config: PretrainedConfig, needed: int, context: int) -> int:
    """The static cache's length for a run of `needed` positions: a power of two (`cache_length`), within the
    attention window when the run fits in it (Phi-3-mini's 2,047)."""
    window = sliding_window(config)
    return cache_length(needed, min(context, window) if window and needed <= window else context)


def windowless(config: PretrainedConfig, length: int) -> PretrainedConfig:
    """`config` for a cache of `length` positions: without its sliding window when the whole cache fits in it.

    transformers' sliding-window cache layers count positions in a Python int, which torch.compile bakes
    into the graph (a recompilation at every step); a window longer than the run changes nothing anyway.
    """
    window = sliding_window(config)
    if window is None or length > window:
        return config
    text = copy.deepcopy(config.get_text_config())
    text.sliding_window = None
    if getattr(text, "layer_types", None):
        text.layer_types = ["full_attention" if kind == "sliding_attention" else kind for kind in text.layer_types]
    return text


def compile_mode(device: torch.device) -> str | None:
    """CUDA graphs on a GPU, where launching kernels is the overhead; inductor's default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


def compile_options(device: torch.device) -> dict[str, object]:
    """torch.compile's arguments: `compile_mode`'s, and on the CPU inductor's own loops for the matrix-vector
    products with at most 2,048 columns (its `decompose_mm_pass`): a small model's step then calls no BLAS
    routine for them, whose per-call cost outweighs the work (the tiny model: 1.10x)."""
    mode = compile_mode(device)
    return {"mode": mode} if mode else {"options": CPU_OPTIONS}


CPU_OPTIONS: dict[str, object] = {"post_grad_fusion_options": {"decompose_mm_pass": {}}}
# The greedy graph's wrapper without inductor's size, stride and alignment asserts on its ~40 inputs and outputs:
# one Python call each at every step (the tiny model: 270-300 -> 246-254 µs a step). That graph is only ever called
# through dynamo's full guards, which check the same sizes and strides, or replayed with the very tensors they passed.
UNASSERTED: dict[str, object] = {"size_asserts": False, "alignment_asserts": False}


def _trusted(trusted: bool) -> contextlib.AbstractContextManager[None]:
    """Skip dynamo's guards for a step whose inputs are of the kind an earlier step of the same run passed them with.

    The guards (the parameters', the cache's and the ids' types, shapes and strides, and the model's config)
    cost 0.3-0.4 ms a call in Python, a third of the tiny model's compiled step on the CPU (1.18 -> 0.80 ms).
    Within one run nothing they check changes: the same model, the same cache tensors, a (1, 1) id tensor each
    step. So the run's first step checks them (and compiles, or picks the graph for this cache), and the rest
    run under `skip_guard_eval_unsafe`, which still tells the graphs of different cache lengths apart; inductor's
    own size and stride asserts stay. Only on the CPU: under CUDA graphs a step is dominated by the GPU's work,
    and that path has not run on a GPU here. A plain greedy run does better than this on the CPU (`Replay`); this
    serves the step of a sampled or processed run (`decode`) and its observation.
    """
    if not trusted or not hasattr(torch.compiler, "set_stance"):  # torch 2.6 and newer
        return contextlib.nullcontext()
    return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)


def seeing_hooks() -> contextlib.AbstractContextManager[None]:
    """Dynamo's guards on the modules' hooks, which it leaves out by default (`skip_nnmodule_hook_guards`: a hook
    registered after the step compiled would never run in it, and one removed would go on running). With them, a
    step compiled without hooks is compiled again for a model with one (an intervention, a server's cancel check),
    and the first again once it is gone. Read when dynamo builds the guards, at a compile."""
    return torch._dynamo.config.patch(skip_nnmodule_hook_guards=False)


@dataclass
class Compiled:
    """One model's compiled decode step and the static caches it runs over."""

    lm: LM
    step: Callable[[torch.Tensor, StaticCache], torch.Tensor] | None = None
    note: str | None = None  # why the run is eager after all, once compiling failed
    _caches: dict[int, StaticCache] = field(default_factory=dict)
    _lent: set[int] = field(default_factory=set)
    _cache_kwarg: str = "past_key_values"
    _observe: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    _greedy: Callable[[torch.Tensor, StaticCache], tuple[torch.Tensor, torch.Tensor]] | None = None
    replays: int = 0  # greedy steps that replayed the graph directly (`Replay`), for tests and profiles
    _runs: dict[int, _Run] = field(default_factory=dict)  # the runs decoding now, by their cache's id
    _seen: tuple[Callable[..., Any], tuple[Any, ...], Any] | None = None  # the compiled graph's last call

    @classmethod
    def for_model(cls, lm: LM) -> Compiled:
        """The model's compiled step, made on first use and kept for as long as the model lives."""
        held = getattr(lm.model, _ATTRIBUTE, None)
        if held is None:
            held = cls(lm)
            object.__setattr__(lm.model, _ATTRIBUTE, held)  # dies with the model (a cycle, not a global)
        return held

    @property
    def failed(self) -> bool:
        """True once compiling failed: decode eagerly from then on."""
        return self.note is not None

    def borrow_cache(self, needed: int) -> StaticCache:
        """A cleared static cache for `needed` positions, the same tensors each run (CUDA graphs replay on fixed
        addresses); a fresh one when the held one is still in use by another stream."""
        from transformers import StaticCache

        length = run_cache_length(self.lm.config, needed, self.lm.context_length)
        window = sliding_window(self.lm.config)
        if window is not None and length > window and not self.failed:
            self.note = (f"--compile: a run of {needed} positions passes the model's {window}-token attention window, "
                         "whose cache would recompile at every step; decoding eagerly instead")
        cache = self._caches.get(length)
        if cache is None or length in self._lent:
            fresh = StaticCache(config=windowless(self.lm.config, length), max_cache_len=length)
            if cache is not None:
                return fresh
            cache = self._caches[length] = fresh
        else:
            with torch.inference_mode():  # its tensors were made in inference mode, by the prefill
                cache.reset()
        self._lent.add(length)
        return cache

    def give_back(self, cache: StaticCache) -> None:
        """The stream that borrowed `cache` is done with it."""
        for length, held in self._caches.items():
            if held is cache:
                self._lent.discard(length)
        if (run := self._runs.get(id(cache))) is not None and run.cache is cache:
            del self._runs[id(cache)]

    def decode(self, ids: torch.Tensor, cache: StaticCache, eager: Callable[[], torch.Tensor],
               checked: bool = False) -> torch.Tensor:
        """The next position's logits for the newest token `ids` (1, 1); `eager` when compiling failed.

        `checked`: an earlier step of this run already passed the guards (see `_trusted`).
        """
        if self.failed:
            return eager()
        if self.step is None:
            self._cache_kwarg = cache_argument(self.lm.model)  # read here: inspect.signature does not trace
            self.step = torch.compile(self._forward, fullgraph=True, dynamic=False, **compile_options(self.lm.device))
        try:
            with _trusted(checked and self.lm.device.type == "cpu"), seeing_hooks():
                logits = self.step(ids, cache)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly, say so once
            self.note = f"--compile: compiling failed ({_first_line(exc)}); decoding eagerly instead"
            return eager()
        # CUDA graphs write their outputs into the same memory at the next replay: keep this step's copy.
        return logits.clone() if self.lm.device.type == "cuda" else logits

    def observation(self, logits: torch.Tensor, token: torch.Tensor, checked: bool = False) -> torch.Tensor:
        """step.observation compiled too: a dozen small ops over the vocabulary become one kernel call."""
        if self.failed:
            return observation(logits, token)
        if self._observe is None:
            self._observe = torch.compile(observation, fullgraph=True, dynamic=False)
        try:
            with _trusted(checked and self.lm.device.type == "cpu"):
                return self._observe(logits, token)
        except Exception as exc:  # noqa: BLE001 - as in decode
            self.note = f"--compile: compiling failed ({_first_line(exc)}); decoding eagerly instead"
            return observation(logits, token)

    def greedy_step(self, ids: torch.Tensor, cache: StaticCache, eager: Callable[[], torch.Tensor],
                    checked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The next token picked greedily after `ids` (1, 1), and its observation row, in one compiled call.

        For a run with no processors and no sampler the token is the logits' argmax, so the model's step, the pick
        and the observation trace as one graph: one dynamo wrapper and one guard check a token instead of two (the
        tiny model's step spent about 15 % of its time in them). `eager` gives the logits when compiling failed.
        `checked` is False at a run's first step; on the CPU the run's later steps replay the graph (`Replay`).
        # (1, 1) -> (1,), (3 + 2k,)
        """
        cpu = self.lm.device.type == "cpu"
        if not self.failed and self._greedy is None:
            self._cache_kwarg = cache_argument(self.lm.model)  # read here: inspect.signature does not trace
            self._greedy = torch.compile(self._forward_greedy, fullgraph=True, dynamic=False,
                                         **({"backend": self._capture} if cpu else compile_options(self.lm.device)))
        if self._greedy is not None and not self.failed:
            if cpu:
                picked = self._replayed(ids, cache, checked)
                if picked is not None:
                    return picked
            else:
                try:
                    with seeing_hooks():
                        token, row = self._greedy(ids, cache)
                except Exception as exc:  # noqa: BLE001 - as in decode
                    self.note = f"--compile: compiling failed ({_first_line(exc)}); decoding eagerly instead"
                else:
                    # CUDA graphs write their outputs into the same memory at the next replay: keep this step's copies.
                    return (token.clone(), row.clone()) if self.lm.device.type == "cuda" else (token, row)
        logits = eager()  # (1, vocab)
        token = logits.argmax(-1)  # (1,)
        return token, observation(logits[0], token)

    def _replayed(self, ids: torch.Tensor, cache: StaticCache,
                  checked: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The CPU's greedy step: the run's replay when it holds, else one call through dynamo's guards (which may make
        the replay); None, with the note said, when compiling failed."""
        run = self._runs.get(id(cache))
        if run is None or run.cache is not cache or not checked:  # a run's first step: nothing of an earlier run holds
            run = self._runs[id(cache)] = _Run(cache)
        if run.replay is not None:
            if run.replay.holds():
                self.replays += 1
                return run.replay(ids)
            run.replay = None  # a hook or a parameter changed: back through the guards, which may replay again
        self._seen = None
        try:
            with seeing_hooks():
                token, row = self._greedy(ids, cache)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - as in decode
            self.note = f"--compile: compiling failed ({_first_line(exc)}); decoding eagerly instead"
            return None
        run.replay = run.offer(self._seen, ids, (token, row), self.lm.model)
        self._seen = None  # the run keeps what it needs; the model's tensors are not held here past it
        return token, row

    def _capture(self, graph: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
        """torch.compile's backend on the CPU: inductor, as `compile_options` sets it, with each call's inputs and
        outputs kept in `self._seen` for `_Run.offer`."""
        from torch._inductor.compile_fx import compile_fx

        compiled = compile_fx(graph, inputs, config_patches={**CPU_OPTIONS, **UNASSERTED})

        def call(*args: Any) -> Any:
            out = compiled(*args)
            self._seen = (compiled, args, out)
            return out
        return call

    def _forward_greedy(self, ids: torch.Tensor, cache: StaticCache) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._forward(ids, cache)  # (1, vocab)
        token = logits.argmax(-1)  # (1,) as the loop's greedy pick takes it
        return token, observation(logits[0], token)

    def _forward(self, ids: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        # On the CPU the step is traced with transformers' eager attention instead of SDPA: for one query, SDPA is an
        # opaque kernel call per layer that also needs the KV heads copied to the query heads (repeat_kv, the whole
        # static cache each step), where the eager attention's matmuls and softmax are fused by inductor into its
        # own loops with the rest of the layer (the tiny model: 2,100 -> 2,450 tokens/s). The switch is a traced
        # side effect: dynamo reads "eager" while it traces and, after each call, writes back the model's own value;
        # the eager model never sees it.
        config = self.lm.model.config
        swap = self.lm.device.type == "cpu" and getattr(config, "_attn_implementation_internal", None) == "sdpa"
        if swap:
            config._attn_implementation_internal = "eager"
        out = self.lm.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
        if swap:
            config._attn_implementation_internal = "sdpa"
        return out.logits[:, -1, :].float()  # (1, vocab)


@dataclass
class Replay:
    """A run's greedy graph called directly: inductor's compiled function with the inputs dynamo gathered for it.

    Dynamo's wrapper around the graph (the frame hook, the guards, and the bytecode that reads every parameter and
    cache tensor off the model) cost the tiny model's step about a third of its time on the CPU (426 -> 309 µs),
    though within one run it gathers the same tensor objects at every step: only the newest token's id changes
    (the cache is written in place, and its position lives in its tensors). So once two guarded steps passed the
    very same objects, the rest of the run passes them itself. What the guards would see change within a run is
    checked here, cheaply: a hook registered anywhere since (torch numbers every hook handle it makes), a parameter
    or buffer of the model replaced by another object, inference mode switched. A weight changed in place is the
    same tensor and is read as it is now. Hooks present at the start keep the run on the guarded path: the graph
    traced them, with whatever Python state they read.
    """

    graph: Callable[..., Any]
    args: list[Any]
    ids_at: int  # where the newest token's id goes among the graph's inputs
    slots: tuple[tuple[dict[str, Any], str, torch.Tensor], ...]  # (module's _parameters or _buffers, name, tensor)
    handles: int  # RemovableHandle.next_id when the replay was made
    inference: bool

    def holds(self) -> bool:
        """True while nothing the guards would notice has changed since the replay was made."""
        return (RemovableHandle.next_id == self.handles and torch.is_inference_mode_enabled() == self.inference
                and all(table.get(name) is tensor for table, name, tensor in self.slots))

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The greedy token after `ids` (1, 1) and its observation row, as the guarded call returns them."""
        args = self.args
        args[self.ids_at] = ids
        token, row = self.graph(*args)
        return token, row


@dataclass
class _Run:
    """One run's state for its replay: the last guarded call's inputs, and the replay once two calls agreed."""

    cache: StaticCache
    last: tuple[Any, ...] | None = None  # the graph and its inputs at the last guarded step, None for the ids
    replay: Replay | None = None

    def offer(self, seen: tuple[Callable[..., Any], tuple[Any, ...], Any] | None, ids: torch.Tensor,
              returned: tuple[torch.Tensor, torch.Tensor], model: torch.nn.Module) -> Replay | None:
        """The replay, once this guarded call (`seen`: the compiled graph, its inputs and outputs) passed the same
        graph the same inputs as the one before it, but for the ids; None until then, or while hooks are present."""
        if seen is None:  # the call did not reach the graph through our backend
            self.last = None
            return None
        graph, args, out = seen
        at = [i for i, arg in enumerate(args) if arg is ids]
        same_out = isinstance(out, (tuple, list)) and len(out) == 2 and all(a is b for a, b in zip(out, returned))
        if len(at) != 1 or not same_out:
            self.last = None
            return None
        now = (graph, *args[: at[0]], None, *args[at[0] + 1 :])  # None where the ids go
        agreed = self.last is not None and len(now) == len(self.last) and all(a is b for a, b in zip(now, self.last))
        self.last = now
        if not agreed or _hooked(model):
            return None
        inputs = {id(arg) for arg in args if isinstance(arg, torch.Tensor)}
        slots = tuple((table, name, tensor) for module in model.modules()
                      for table in (module._parameters, module._buffers)
                      for name, tensor in table.items() if id(tensor) in inputs)
        return Replay(graph, list(args), at[0], slots, RemovableHandle.next_id, torch.is_inference_mode_enabled())


def _hooked(model: torch.nn.Module) -> bool:
    """True when any hook would run in the model's forward pass: its modules' own, or torch's global ones."""
    from torch.nn.modules import module as modules

    if (modules._global_forward_hooks or modules._global_forward_pre_hooks or modules._global_backward_hooks
            or modules._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in model.modules())


_ATTRIBUTE = "_lookinside_compiled"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
