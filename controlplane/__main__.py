"""`python -m controlplane` runs the command-line interface."""

from controlplane.cli import main

raise SystemExit(main())
