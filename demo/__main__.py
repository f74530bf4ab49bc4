"""`python -m demo` (what `make demo` runs): the HEAL7 journey, see `demo.journey`."""

from demo.journey import main

main()
