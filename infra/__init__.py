"""Infrastructure at the edges: database engines, migrations, logging and Sentry."""
