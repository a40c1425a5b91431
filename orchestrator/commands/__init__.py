"""`ifdd` subcommand groups. Each module exposes ``register(subparsers)`` and sets ``func`` on its parsers."""
