"""The terminal side: Rich views (data -> renderable), consoles, the REPL."""
