"""`python -m lookinside` runs the CLI under its long name."""

from lookinside.cli.app import app

if __name__ == "__main__":
    app(prog_name="lookinside")
