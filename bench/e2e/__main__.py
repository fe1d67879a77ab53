"""`python -m bench.e2e`."""

from bench.e2e.cli import main

raise SystemExit(main())
