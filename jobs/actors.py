"""The exchange's actors: thin, each delegating to a step service (filled in by the workflow)."""
