"""The RepeatedStringField and the BigQueryModel base class."""

from __future__ import annotations

import datetime
import json

import pytest
from django.core.exceptions import ValidationError

from bigquery_backend.fields import RepeatedStringField
from bigquery_backend.models import model_as_json, model_from_json
from tests.bigquery_backend.widgets import Widget, make_widget, widget_values


def test_it_defaults_a_repeated_field_to_a_fresh_empty_list() -> None:
    first, second = make_widget("a"), make_widget("b")
    first.tags.append("x")
    assert second.tags == []


@pytest.mark.parametrize("value", [[], ["a"], ("a", "b"), ["", "ü"]], ids=str)
def test_it_accepts_lists_of_strings(value: object) -> None:
    RepeatedStringField().validate(value, None)


@pytest.mark.parametrize("value", ["abc", [1], ["a", None], {"a": "b"}, [["nested"]]], ids=str)
def test_it_refuses_anything_but_a_list_of_strings(value: object) -> None:
    with pytest.raises(ValidationError):
        RepeatedStringField().validate(value, None)


def test_it_refuses_to_save_a_bigquery_row_through_the_orm() -> None:
    with pytest.raises(TypeError, match="Repository"):
        make_widget("a").save()


def test_it_refuses_to_delete_a_bigquery_row_through_the_orm() -> None:
    with pytest.raises(TypeError, match="Repository"):
        make_widget("a").delete()


def test_it_keeps_a_row_as_json_and_gets_it_back_to_the_microsecond() -> None:
    widget = make_widget(
        "a",
        created_at=datetime.datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=datetime.UTC),
        due_on=datetime.date(2026, 3, 29),
        attributes={"nested": [1, "two"]},
        tags=["x", "y"],
        payload=b"\x00\xff",
    )
    kept = json.loads(json.dumps(model_as_json(widget)))
    back = model_from_json(Widget, {**kept, "a_column_of_a_later_release": 1})
    assert widget_values(back) == widget_values(widget)
