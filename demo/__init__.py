"""`make demo`: the HEAL7 journey on an embedded stack (a Temporal dev server, a worker and
the local platform on this machine). Not part of the `slipway` CLI: `journey` runs the demo,
`localstack` starts and stops the stack (the end-to-end tests and the soak use it too),
`prometheus` is the demo's Prometheus."""
