"""One presentation rule per kind of value (tenants_app/presentation.py)."""

from __future__ import annotations

import datetime as dt

from django.template import Context, Template
from django.utils import formats

from tenants_app import presentation
from tenants_app.labels import enum_label


def test_it_shows_every_time_in_utc_to_the_second_with_its_zone() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    assert (
        presentation.timestamp(dt.datetime(2026, 12, 3, 17, 30, 5, tzinfo=paris)) == "2026-12-03 16:30:05 UTC"
    )
    assert presentation.timestamp(dt.datetime(2026, 12, 3, 16, 30, 5)) == "2026-12-03 16:30:05 UTC"
    assert presentation.timestamp("2026-12-03T16:30:05.123Z") == "2026-12-03 16:30:05 UTC"
    assert presentation.timestamp(dt.date(2026, 12, 3)) == "2026-12-03"
    assert presentation.timestamp(None) == presentation.EMPTY


def test_it_renders_a_bare_datetime_in_a_template_the_same_way() -> None:
    # Django's own `{{ value }}` (and so the admin's pages) goes through FORMAT_MODULE_PATH.
    value = dt.datetime(2026, 12, 3, 16, 30, 5, tzinfo=dt.UTC)
    assert Template("{{ value }}").render(Context({"value": value})) == presentation.timestamp(value)
    assert formats.date_format(value, "DATETIME_FORMAT") == "2026-12-03 16:30:05 UTC"


def test_it_writes_durations_for_people() -> None:
    assert presentation.duration_ms(250_000) == "4 min 10 s"
    assert presentation.duration_ms(7_200_000) == "2 h"
    assert presentation.duration_ms(90_061_000) == "1 d 1 h"
    assert presentation.duration_ms(850) == "850 ms"
    assert presentation.duration_ms("n/a") == "n/a"


def test_it_shows_structured_values_as_json_not_python() -> None:
    assert presentation.json_text({"region": "eu"}) == '{\n  "region": "eu"\n}'
    assert presentation.json_text('{"a": [1, 2]}') == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert "'" not in presentation.json_text({"nested": {"x": True}})


def test_it_labels_enum_values_from_the_models_choices() -> None:
    assert enum_label("ACTIVE") == "Active"
    assert enum_label("OPENAI") == "OpenAI"
    assert enum_label("GCP") == "GCP"
    assert enum_label("SOMETHING_ELSE") == "SOMETHING_ELSE"


def test_it_offers_the_rules_as_template_filters() -> None:
    rendered = Template("{% load portal_format %}{{ ms|duration }} | {{ p|label }} | {{ j|as_json }}").render(
        Context({"ms": 61_000, "p": "OPENAI", "j": {"k": 1}})
    )
    assert rendered == "1 min 1 s | OpenAI | {\n  &quot;k&quot;: 1\n}"
