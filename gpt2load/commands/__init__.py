"""One module per ``gpt2load`` sub-command; each defines ``register(subparsers)``.

``register`` adds the parser and sets ``func`` to a callable taking the parsed
arguments and returning an exit code.
"""
