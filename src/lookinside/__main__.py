"""`python -m lookinside` runs the CLI under its long name."""

from lookinside.cli.app import main

if __name__ == "__main__":
    main(prog_name="lookinside")
