"""The RepeatedStringField and the BigQueryModel base class."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from bigquery_backend.fields import RepeatedStringField
from tests.bigquery_backend.widgets import make_widget


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
