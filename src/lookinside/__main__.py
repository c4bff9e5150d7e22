"""`python -m lookinside` runs the CLI."""

from lookinside.cli.app import main

if __name__ == "__main__":
    main()
