"""Test running: test commands, command stages and what their venvs hold."""
