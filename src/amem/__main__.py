"""``python -m amem`` runs the CLI."""

from .cli import main

main()
