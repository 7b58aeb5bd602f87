"""`python -m codexk8s` is the `codexk8s` command."""

from codexk8s.cli import main

main()
