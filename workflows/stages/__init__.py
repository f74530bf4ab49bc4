"""What each stage kind does inside PipelineWorkflow: `run_state` (what stages share, and
`stage_call`), `source`, `artifacts`, `environments` (one module per family of kinds) and
`dispatch` (kind → runner)."""
