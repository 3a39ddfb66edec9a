"""Defaults the CLI shows in `--help`, kept free of Prefect so that help answers at once."""

DEFAULT_BLOCK = "default"
