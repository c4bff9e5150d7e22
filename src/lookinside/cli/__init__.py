"""The command line: Typer only. Parse options, make one core call, print one view."""
