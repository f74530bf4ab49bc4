"""`make bench`: orchestration overhead, DAG fidelity, parked runs and replay time on the
Temporal dev server (see `run.py`)."""
