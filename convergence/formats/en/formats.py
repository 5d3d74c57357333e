"""One way to write a time on every page, the admin's own included: ISO-like, to the second, with its zone.

Django reads these through `FORMAT_MODULE_PATH` instead of its English formats ("Dec. 3, 2026, 4:04 p.m."),
so a `{{ value }}` in any template, ours or the admin's, renders like `timestamp` in
tenants_app/presentation.py. Times are stored and shown in UTC (`TIME_ZONE`), so `T` prints "UTC".
"""

from __future__ import annotations

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
MONTH_DAY_FORMAT = "j M"
YEAR_MONTH_FORMAT = "M Y"
# The admin's date widgets and filters read input formats too: ISO first, as we print it.
DATE_INPUT_FORMATS = ["%Y-%m-%d"]
DATETIME_INPUT_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
FIRST_DAY_OF_WEEK = 1
