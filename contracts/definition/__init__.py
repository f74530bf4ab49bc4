"""The definition language: the pipeline model, loading and validation, the DAG, limits and
freeze windows (pure; passed through the workflow sandbox with the rest of `contracts`)."""
