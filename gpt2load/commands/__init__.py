"""One module per sub-command of ``gpt2load``, whose ``register(subparsers)`` adds it."""
