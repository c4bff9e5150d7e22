"""Records and requests to strict JSON and back, by their dataclass fields: one codec for every view.

`to_wire` turns a dataclass (and what it holds: tuples, lists, dicts, nested dataclasses) into
JSON values; `from_wire` rebuilds it from its type hints, so a client draws a server's answer
with the same view as a local one. It is the only serialiser of a record: `llm VIEW --json`,
`.to_dict()` of the Python API, the server's view answers and the transcripts all print what it
makes. A record's numbers that are worked out from its fields (a run's text, its perplexity, a
diff's mean KL) are properties named in the record's `DERIVED`: `to_wire` writes them after the
fields, so a reader of the JSON need not redo the sum, and `from_wire` drops them, since the
rebuilt record works them out again from the same fields. A number that is not finite follows the one rule of
every JSON lookinside writes (core/finite.py): it is null, and a top-level "nulls" object says
where and what it was (`{"nulls": {"top[0].logit": "-Infinity"}}`); `from_wire` puts it back.
(The OpenAI routes alone keep vLLM's own convention: serve/openai_api.py's NEG_INF.) A request
rebuilt here is checked by its own `__post_init__`, so a bad field is the same one-line error
on a server as on the command line. Nothing here imports torch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from lookinside.core.errors import BadInput
from lookinside.core.finite import NULLS, json_safe

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}  # as "nulls" names them
_STEP = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


def to_wire(value: Any) -> Any:
    """`value` as strict JSON values: dataclasses as objects of their fields, a non-finite float null (said in "nulls")."""
    return json_safe(_plain(value))


def derived(kind: type) -> tuple[str, ...]:
    """The names of `kind`'s worked-out values that its JSON carries beside its fields (its `DERIVED`)."""
    return getattr(kind, "DERIVED", ())


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return fields | {name: _plain(getattr(value, name)) for name in derived(type(value))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def from_wire(kind: Any, data: Any, where: str = "") -> Any:
    """A value of type `kind` rebuilt from `to_wire`'s output; BadInput naming the field when it does not fit."""
    if not where and isinstance(data, dict) and NULLS in data:
        data = _with_non_finite(data)
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return data
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return from_wire(option, data, where)
            except BadInput:
                continue
        raise _unfit(kind, data, where)
    if origin is Literal:
        if data in args:
            return data
        raise _unfit(kind, data, where)
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, data, where)
    if origin in (tuple, list) or kind in (tuple, list):
        if not isinstance(data, list):
            raise _unfit(kind, data, where)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(data):
                raise _unfit(kind, data, where)
            items = [from_wire(a, d, f"{where}[{i}]") for i, (a, d) in enumerate(zip(args, data))]
        else:
            item = args[0] if args else Any
            items = [from_wire(item, d, f"{where}[{i}]") for i, d in enumerate(data)]
        return tuple(items) if (origin or kind) is tuple else items
    if origin is dict or kind is dict:
        if not isinstance(data, dict):
            raise _unfit(kind, data, where)
        key, item = args if args else (str, Any)
        return {_key(key, k, where): from_wire(item, v, f"{where}.{k}") for k, v in data.items()}
    return _scalar(kind, data, where)


def _dataclass(kind: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _unfit(kind, data, where)
    hints = _hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind) if f.init}
    unknown = sorted(set(data) - set(fields) - set(derived(kind)))  # a derived value is worked out again
    if unknown:
        raise BadInput(f"{_at(where)}unknown field {unknown[0]!r} (known: {', '.join(fields)})")
    values = {name: from_wire(hints[name], data[name], f"{where}.{name}".lstrip(".")) for name in fields
              if name in data}
    try:
        return kind(**values)
    except TypeError as exc:  # a required field left out
        raise BadInput(f"{_at(where)}{_first_line(exc)}") from None


def _with_non_finite(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without its "nulls", each null it names put back as the number it was."""
    data = copy.deepcopy(data)
    nulls = data.pop(NULLS)
    if not isinstance(nulls, dict):
        raise BadInput(f"{NULLS!r} must map places to NaN, Infinity or -Infinity")
    for place, what in nulls.items():
        steps = [int(index) if index else key for index, key in _STEP.findall(place)]
        if what not in NON_FINITE or not steps:
            raise BadInput(f"{NULLS}: {place!r} cannot be {what!r}")
        parent = data
        try:
            for step in steps[:-1]:
                parent = parent[step]
            if parent[steps[-1]] is not None:
                raise BadInput(f"{NULLS}: {place!r} is not null")
            parent[steps[-1]] = NON_FINITE[what]
        except (KeyError, IndexError, TypeError):
            raise BadInput(f"{NULLS}: there is no {place!r}") from None
    return data


def _scalar(kind: Any, data: Any, where: str) -> Any:
    if kind is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
    elif kind is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
    elif kind in (str, bool):
        if type(data) is kind:
            return data
    elif kind is type(None):
        if data is None:
            return None
    elif isinstance(kind, type) and isinstance(data, kind):
        return data
    raise _unfit(kind, data, where)


def _key(kind: Any, key: str, where: str) -> Any:
    if kind is int:
        try:
            return int(key)
        except ValueError:
            raise BadInput(f"{_at(where)}{key!r} is not a whole-number key") from None
    return key


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _unfit(kind: Any, data: Any, where: str) -> BadInput:
    shown = repr(data) if len(repr(data)) <= 40 else repr(data)[:37] + "..."
    return BadInput(f"{_at(where)}expected {_name(kind)}, not {shown}")


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _at(where: str) -> str:
    return f"field {where!r}: " if where else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0].replace("__init__() ", "")
