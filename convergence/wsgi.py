"""WSGI entry point: `gunicorn convergence.wsgi`."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from convergence.checks import refuse_exposed_data_dir

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

application = get_wsgi_application()

# gunicorn runs no system checks: refuse here, in every worker (and in the master with --preload), so a
# data directory other accounts can read is never served; a failed boot stops gunicorn with the check's
# message and fix in its log. Refusing rather than only logging: serving would go on writing session ids
# into files another account can read, and one line in a busy log is easily missed.
refuse_exposed_data_dir()
