"""Shell completion scripts for `llm` and `lookinside`, as Typer generates them.

The scripts call back into the program (`_LLM_COMPLETE=complete_bash llm ...`), so
completion always knows the current commands; `python -m lookinside.cli.completions`
rewrites the copies under completions/.
"""

import sys
from pathlib import Path

from typer.completion import get_completion_script

SHELLS = {"bash": "{prog}.bash", "zsh": "_{prog}", "fish": "{prog}.fish"}
PROGRAMS = ("llm", "lookinside")


def completion_files() -> dict[str, str]:
    """File name -> script, for each program name and shell."""
    return {
        pattern.format(prog=prog): get_completion_script(
            prog_name=prog, complete_var=f"_{prog.upper()}_COMPLETE", shell=shell
        )
        for prog in PROGRAMS
        for shell, pattern in SHELLS.items()
    }


def write(folder: Path) -> None:
    """Write every completion script into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, script in completion_files().items():
        (folder / name).write_text(script if script.endswith("\n") else script + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("completions"))
