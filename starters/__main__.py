"""`python -m starters COMMAND` is the same as `slipway COMMAND`."""

from starters.cli import main

main()
