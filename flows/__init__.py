"""Prefect flows, one per command: read each as the DAG it runs."""
