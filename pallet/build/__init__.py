"""`pallet build`: docker's classic builder without a daemon. A Dockerfile is parsed
(parse.py, the official Go parser through the `dockerfile` package), its words expanded
as docker's shell lexer does (shell_lex.py), and each step run by builder.py on the
engine's containers and the image store's commit code.

A layer above the engine: it creates, starts and removes containers through the engine,
and writes images through pallet.image; the CLI (pallet/cli/build.py) only parses flags.
"""
