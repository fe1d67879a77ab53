"""gunicorn's settings for the Procfile's `web:` (12-factor: the numbers come from the environment).

Requests gunicorn refuses before Flask sees them are answered in the API's JSON error shape
(web/server_errors.py): a request line over `limit_request_line` (414), a header over
`limit_request_field_size` or more than `limit_request_fields` of them (431), a malformed
header or one with control characters (400).
"""

import os

from web.server_errors import install

install()

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# Behind a load balancer that keeps connections open: longer than its idle timeout.
keepalive = 75
