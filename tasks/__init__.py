"""Prefect tasks: thin, retryable I/O steps over dmf's modules. One module per stage."""
