"""EnvironmentWorkflow, one file per concern: `workflow` (its main loop and the lease),
`rollbacks` (a run's and a person's) and `record` (what it holds and shows)."""
