"""PipelineWorkflow, one file per concern: `workflow` (the run and its scheduling), `gates`
(approvals, freeze windows, operator actions), `rollbacks`, `visibility` (its state and what
it shows)."""
