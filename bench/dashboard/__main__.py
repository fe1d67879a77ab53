"""`python -m bench.dashboard`."""

from bench.dashboard.cli import main

raise SystemExit(main())
