"""Running a service's own code: subprocesses, the sandbox, the child environment, venvs."""
