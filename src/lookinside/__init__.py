"""lookinside: look inside a large language model while you talk to it.

The command is `llm`; the Python API is this package (`import lookinside as li`), documented in
docs/api.md. Its names load lazily from `lookinside.api`, so `import lookinside` costs no torch.
"""

import os
from typing import Any

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. Spinning, a 2-thread pool beside one
# busy process decoded the tiny model at 3-6 tokens/s instead of 318-503 (core/model/threads.py, docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["Generating", "Result", "attention", "bench", "compare", "connect", "diff", "forward", "generate", "inspect", "lens",
           "load", "next_token", "tokens", "wrap"]
__all__ += ["ablate", "patch", "steer"]  # docs/interventions.md


def __getattr__(name: str) -> Any:
    from lookinside.views import VIEWS  # deferred: views and the API (`import lookinside` starts every `llm`)

    if name in __all__ or name.replace("_", "-") in VIEWS:  # every view is a function, li.next_token and the rest
        from lookinside import api  # deferred: as above

        return getattr(api, name)
    raise AttributeError(f"module 'lookinside' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
