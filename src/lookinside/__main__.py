"""`python -m lookinside` runs the CLI under its long name."""

if __name__ == "__main__":
    from lookinside.cli import quiet_interrupts_until_ready

    quiet_interrupts_until_ready()  # before the heavy imports: a Ctrl-C during them is quiet too
    from lookinside.cli.app import main

    main(prog_name="lookinside")
