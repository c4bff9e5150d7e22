"""The layers, read from the source with `ast`: no import circles, core/ never reaches up, the data types stand
alone, and an import sits inside a function only where it defers a heavy module.

Every module under src/lookinside is parsed; an import counts wherever it is (module level or in a function,
relative ones resolved), and `from package import module` counts as the module. Imports under
`if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Imported only inside the functions that need them, so `llm --help` and a client of a server stay light:
# torch and its kin take seconds; `python -X importtime -c "import X"` on the 2-core machine measured
# openai 780 ms, numpy 160 ms, gguf 140 ms, starlette.applications 115 ms, prompt_toolkit 115 ms,
# uvicorn 80 ms, pydantic 62 ms, rich.console 53 ms, psutil 33 ms, PIL.Image 20 ms, tokenizers 16 ms.
HEAVY = frozenset({
    "torch", "transformers", "accelerate", "safetensors", "torchao", "bitsandbytes", "numpy", "gguf",
    "tokenizers", "huggingface_hub", "openai", "starlette", "uvicorn", "httpx", "prompt_toolkit", "rich",
    "pydantic", "psutil", "PIL", "jinja2",
})
# The modules that hold plain data every layer shares: they import nothing of decoding or of the model.
DATA = ("lookinside.core.request", "lookinside.core.records", "lookinside.core.sampling_params",
        "lookinside.core.inside.interventions.requests", "lookinside.core.inside.interventions.records")


@dataclass(frozen=True)
class Import:
    """One import statement's target as the graph counts it."""

    module: str  # the importing module
    target: str  # a lookinside module, or the top-level package of anything else
    line: int
    in_function: bool
    comment: str  # the line's `# deferred: ...` comment, or ""


@dataclass
class Graph:
    """Every lookinside module and the imports it makes."""

    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)

    def edges(self, module_level_only: bool = False) -> dict[str, set[str]]:
        """Importer -> the lookinside modules it imports."""
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for i in self.imports:
            if i.target in self.modules and i.target != i.module and not (module_level_only and i.in_function):
                out[i.module].add(i.target)
        return out


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if package else parts), package


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def graph() -> Graph:
    """The import graph of src/lookinside."""
    g = Graph()
    packages = set()
    for path in sorted((SRC / "lookinside").rglob("*.py")):
        name, package = _module_name(path)
        g.modules[name] = path
        if package:
            packages.add(name)
    for name, path in g.modules.items():
        text = path.read_text()
        lines = text.splitlines()

        def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
            if isinstance(node, ast.Import):
                return [a.name for a in node.names]
            base = name.split(".") if name in packages else name.split(".")[:-1]
            if node.level:
                base = base[:len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            return [f"{source}.{a.name}" if f"{source}.{a.name}" in g.modules else source for a in node.names]

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if _type_checking(child):
                    continue
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    statement = "\n".join(lines[child.lineno - 1:child.end_lineno])
                    comment = statement.partition("# deferred:")[2].strip()
                    for target in targets(child):
                        top = target if target in g.modules else target.split(".")[0]
                        if target.startswith("lookinside.") and target not in g.modules:
                            top = target  # a name the test cannot resolve is reported as it is
                        g.imports.append(Import(name, top, child.lineno, inner, comment))
                visit(child, inner)

        visit(ast.parse(text), False)
    return g


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _cycle(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One circle inside `component`, as a path that ends where it starts."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    return component


def heavy_modules() -> dict[str, str]:
    """Each lookinside module that imports a heavy package at module level (itself or through another): which."""
    g = graph()
    heavy = {i.module: i.target for i in g.imports if not i.in_function and i.target in HEAVY}
    edges = g.edges(module_level_only=True)
    changed = True
    while changed:
        changed = False
        for module, targets in edges.items():
            if module not in heavy and (through := sorted(targets & heavy.keys())):
                heavy[module] = heavy[through[0]]
                changed = True
    return heavy


def test_no_two_modules_import_each_other():
    edges = graph().edges()
    circles = [f"{' -> '.join(_cycle(edges, c))}" + (f" (and {len(c) - 2} more modules in its knot: {', '.join(c)})"
                                                     if len(c) > 2 else "") for c in strongly_connected(edges)]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_core_does_not_reach_up():
    up = ("lookinside.ui", "lookinside.cli", "lookinside.serve", "lookinside.views", "lookinside.api")
    wrong = [f"{i.module}:{i.line} imports {i.target}" for i in graph().imports
             if i.module.startswith("lookinside.core.") and i.target.startswith(up)]
    assert not wrong, "\n".join(wrong)


def test_the_data_types_import_neither_decoding_nor_the_model():
    below = ("lookinside.core.decoding", "lookinside.core.model")
    wrong = [f"{i.module}:{i.line} imports {i.target}" for i in graph().imports
             if i.module in DATA and i.target.startswith(below)]
    assert not wrong, "\n".join(wrong)
    assert set(DATA) <= graph().modules.keys()


def test_an_import_inside_a_function_defers_a_heavy_module():
    heavy = heavy_modules()
    light = [f"{i.module}:{i.line} imports {i.target}" for i in graph().imports
             if i.in_function and i.target not in HEAVY and i.target not in heavy and not i.comment]
    assert not light, ("imports inside functions that defer nothing heavy (move them to the top, or say "
                       "`# deferred: WHAT` where they must stay):\n" + "\n".join(light))


def test_an_import_of_ours_inside_a_function_says_what_it_defers():
    """`import torch` says what it defers; `from lookinside.core.inside import diff` does not, so its line does."""
    heavy = heavy_modules()
    unsaid = [f"{i.module}:{i.line} imports {i.target} (deferring {heavy.get(i.target, 'nothing heavy')})"
              for i in graph().imports if i.in_function and i.target.startswith("lookinside") and not i.comment]
    assert not unsaid, "say `# deferred: WHAT` on these lines:\n" + "\n".join(unsaid)


def test_no_module_reaches_for_another_modules_private_names():
    """`from lookinside.x import _name`, or `module._name` on an imported lookinside module: a name another module
    needs is public (and documented) where it is defined."""
    g = graph()
    wrong = []
    for name, path in g.modules.items():
        modules: set[str] = set()  # the names this module binds to lookinside modules
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lookinside"):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in g.modules:
                        modules.add(alias.asname or alias.name)
                    elif alias.name.startswith("_") and not alias.name.startswith("__"):
                        wrong.append(f"{name}:{node.lineno} imports {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                modules.update(a.asname for a in node.names if a.name.startswith("lookinside") and a.asname)
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_the_graph_reads_what_it_should():
    """The checks above are only as good as the graph: it resolves `from package import module`, tells an import
    inside a function from one at the top, and leaves out what only a type checker reads."""
    seen = {(i.module, i.target, i.in_function) for i in graph().imports}
    assert ("lookinside.serve.app", "lookinside.serve.chat", False) in seen
    assert ("lookinside.core.model.gguf", "lookinside.core.model.loaded", True) in seen  # `from ...model import loaded`
    assert ("lookinside.serve.app", "lookinside.core.model.loading", True) in seen  # create_app's, for torch
    assert ("lookinside.serve.app", "lookinside.core.model.loading", False) not in seen  # under TYPE_CHECKING only
    assert ("lookinside.core.decoding.generate", "torch", False) in seen
    assert heavy_modules()["lookinside.core.model.loading"] == "torch"
    assert "lookinside.core.request" not in heavy_modules()
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c"]) == ["a", "b", "c", "a"]
