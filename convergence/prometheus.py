"""The directory where gunicorn's workers keep their Prometheus counts (multiprocess mode).

prometheus-client picks its mode when first imported, from PROMETHEUS_MULTIPROC_DIR: the gunicorn
master sets it before it forks any worker (gunicorn_conf.on_starting), so every worker writes its counts
to files there and a scrape of any worker adds them all up (tenants_app/metrics.py). Processes started
otherwise (runserver, commands, tests) leave it unset and count in memory, each for itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from convergence.secrets import make_private_dir

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir_prepare(data_dir: Path) -> Path:
    """Empty `data_dir`/metrics (0700) of a previous server's files and point this process tree at it."""
    directory = data_dir / "metrics"
    make_private_dir(directory)
    # A previous server's counts: summed with ours, they would make a restart look like no restart
    # (Prometheus sees counter resets as such), and the files of every pid ever would pile up.
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(directory)
    return directory
