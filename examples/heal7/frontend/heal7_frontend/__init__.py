"""HEAL7's frontend pages, served from the wheel: `python -m heal7_frontend --port N`."""
