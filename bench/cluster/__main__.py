"""`python -m bench.cluster`."""

from bench.cluster.cli import main

raise SystemExit(main())
