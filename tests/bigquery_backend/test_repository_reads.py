"""Reads: point lookups, filters, ordering, pagination and counts against a live table."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from bigquery_backend.exceptions import InvalidInput, NotFound
from bigquery_backend.repository import Col, Part, Repository, Search
from tests.bigquery_backend.widgets import Widget, WidgetKind, WidgetTableFactory, ids, make_widget

DAY = datetime.datetime(2024, 5, 17, tzinfo=datetime.UTC)
TWO_HOURS_IN = DAY + datetime.timedelta(hours=2)
FEB_1 = datetime.date(2024, 2, 1)


def seven_widgets() -> list[Widget]:
    """Rows chosen so that every filter below selects a different, non-trivial subset."""
    return [
        make_widget("a", name="Alpha gear", kind=WidgetKind.GEAR, quantity=5, used=1, quota=3,
                    ratio=0.5, price=Decimal("1.10"), active=True, due_on=datetime.date(2024, 1, 1),
                    created_at=DAY, notes="first"),
        make_widget("b", name="beta spring", kind=WidgetKind.SPRING, quantity=3, used=3, quota=3,
                    ratio=None, price=Decimal("2.20"), active=False, due_on=None,
                    created_at=DAY + datetime.timedelta(hours=1), notes=None),
        make_widget("c", name="Gamma lever", kind=WidgetKind.LEVER, quantity=5, used=4, quota=2,
                    ratio=1.5, price=None, active=True, due_on=datetime.date(2024, 3, 1),
                    created_at=DAY + datetime.timedelta(hours=2), notes="third"),
        make_widget("d", name="delta GEAR", kind=WidgetKind.GEAR, quantity=1, used=0, quota=None,
                    ratio=2.5, price=Decimal("4.40"), active=True, due_on=datetime.date(2024, 2, 1),
                    created_at=DAY + datetime.timedelta(hours=3), notes="fourth"),
        make_widget("e", name="Epsilon", kind=WidgetKind.SPRING, quantity=3, used=2, quota=10,
                    ratio=0.0, price=Decimal("5.50"), active=False, due_on=datetime.date(2023, 12, 31),
                    created_at=DAY + datetime.timedelta(hours=4), notes=None),
        make_widget("f", name="zeta", kind=WidgetKind.GEAR, quantity=5, used=5, quota=5,
                    ratio=-1.0, price=Decimal("0.01"), active=True, due_on=None,
                    created_at=DAY + datetime.timedelta(hours=5), notes="sixth"),
        make_widget("g", name="Eta gear", kind=WidgetKind.LEVER, quantity=2, used=9, quota=1,
                    ratio=None, price=Decimal("7.70"), active=False, due_on=datetime.date(2024, 3, 1),
                    created_at=DAY + datetime.timedelta(hours=6), notes="seventh"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def seeded(shared_widget_table: WidgetTableFactory) -> Repository[Widget]:
    """Seven rows, shared by this module's tests: none of them writes."""
    return shared_widget_table(*seven_widgets())


@pytest.fixture(scope="module")
def texts(shared_widget_table: WidgetTableFactory) -> Repository[Widget]:
    """Names full of LIKE wildcards and quotes, shared by the text-lookup tests."""
    return shared_widget_table(
        make_widget("percent", name="100% sure"),
        make_widget("digits", name="1000 sure"),
        make_widget("underscore", name="a_b"),
        make_widget("letters", name="axb"),
        make_widget("backslash", name="back\\slash"),
        make_widget("quote", name="O'Brien"),
        make_widget("off", name="%off"),
        make_widget("cafe", name="Café ÉCOLE"),
        make_widget("ascii", name="cafe ecole"),
    )


def expected_ids(predicate: object) -> list[str]:
    """Keys of the seeded rows that satisfy `predicate`, in key order (computed in Python)."""
    assert callable(predicate)
    return sorted(w.widget_id for w in seven_widgets() if predicate(w))


def listed(widgets: Repository[Widget], **filters: object) -> list[str]:
    return ids(widgets.list(filters=filters, order_by=["widget_id"]))


# --- point reads ----------------------------------------------------------------------------------
def test_it_gets_a_row_by_key(seeded: Repository[Widget]) -> None:
    got = seeded.get("c")
    assert (got.widget_id, got.name, got.used) == ("c", "Gamma lever", 4)


def test_it_raises_not_found_for_a_missing_key(seeded: Repository[Widget]) -> None:
    with pytest.raises(NotFound, match="nope"):
        seeded.get("nope")


def test_it_finds_none_for_a_missing_key(seeded: Repository[Widget]) -> None:
    assert seeded.find("nope") is None
    assert seeded.find("a") is not None


def test_it_matches_keys_exactly_not_by_prefix_or_case(seeded: Repository[Widget]) -> None:
    assert seeded.find("A") is None
    assert seeded.find("a ") is None


# --- filters ---------------------------------------------------------------------------------------
def test_it_lists_everything_without_filters(seeded: Repository[Widget]) -> None:
    assert ids(seeded.list(order_by=["widget_id"])) == expected_ids(lambda w: True)


def test_it_filters_on_equality(seeded: Repository[Widget]) -> None:
    assert listed(seeded, kind="GEAR") == expected_ids(lambda w: w.kind == "GEAR")
    assert listed(seeded, quantity__exact=5) == expected_ids(lambda w: w.quantity == 5)
    assert listed(seeded, active=False) == expected_ids(lambda w: w.active is False)


def test_it_filters_on_inequality_excluding_nulls_like_sql(seeded: Repository[Widget]) -> None:
    assert listed(seeded, kind__ne="GEAR") == expected_ids(lambda w: w.kind != "GEAR")
    assert listed(seeded, quota__ne=3) == expected_ids(lambda w: w.quota is not None and w.quota != 3)


def test_it_combines_filters_with_and(seeded: Repository[Widget]) -> None:
    assert listed(seeded, kind="GEAR", quantity=5, active=True) == expected_ids(
        lambda w: w.kind == "GEAR" and w.quantity == 5 and w.active
    )


def test_it_filters_on_in_and_not_in(seeded: Repository[Widget]) -> None:
    assert listed(seeded, widget_id__in=["b", "d", "zz"]) == ["b", "d"]
    assert listed(seeded, kind__not_in=["GEAR", "LEVER"]) == expected_ids(lambda w: w.kind == "SPRING")
    assert listed(seeded, quantity__in=(3, 1)) == expected_ids(lambda w: w.quantity in (3, 1))


def test_it_matches_nothing_for_an_empty_in_and_everything_for_an_empty_not_in(
    seeded: Repository[Widget],
) -> None:
    assert listed(seeded, widget_id__in=[]) == []
    assert listed(seeded, widget_id__not_in=[]) == expected_ids(lambda w: True)
    assert seeded.count(filters={"widget_id__in": []}) == 0


@pytest.mark.parametrize(
    ("lookup", "value", "predicate"),
    [
        ("quantity__gt", 3, lambda w: w.quantity > 3),
        ("quantity__gte", 3, lambda w: w.quantity >= 3),
        ("quantity__lt", 3, lambda w: w.quantity < 3),
        ("quantity__lte", 3, lambda w: w.quantity <= 3),
        ("ratio__gt", 0.5, lambda w: w.ratio is not None and w.ratio > 0.5),
        ("price__lte", Decimal("2.20"), lambda w: w.price is not None and w.price <= Decimal("2.20")),
        ("due_on__gte", FEB_1, lambda w: w.due_on is not None and w.due_on >= FEB_1),
        ("created_at__lt", TWO_HOURS_IN, lambda w: w.created_at < TWO_HOURS_IN),
        ("widget_id__gt", "d", lambda w: w.widget_id > "d"),
    ],
    ids=[
        "int-gt", "int-gte", "int-lt", "int-lte", "float-gt",
        "numeric-lte", "date-gte", "timestamp-lt", "string-gt",
    ],
)  # fmt: skip
def test_it_filters_on_ranges(
    seeded: Repository[Widget], lookup: str, value: object, predicate: object
) -> None:
    assert listed(seeded, **{lookup: value}) == expected_ids(predicate)


def test_it_filters_on_a_range_between_two_bounds(seeded: Repository[Widget]) -> None:
    assert listed(seeded, quantity__gte=2, quantity__lt=5) == expected_ids(lambda w: 2 <= w.quantity < 5)


def test_it_coerces_filter_values_with_the_field(seeded: Repository[Widget]) -> None:
    assert listed(seeded, quantity="5") == expected_ids(lambda w: w.quantity == 5)
    assert listed(seeded, due_on="2024-03-01") == expected_ids(
        lambda w: w.due_on == datetime.date(2024, 3, 1)
    )


def test_it_filters_on_null_and_not_null(seeded: Repository[Widget]) -> None:
    assert listed(seeded, notes__isnull=True) == expected_ids(lambda w: w.notes is None)
    assert listed(seeded, notes__isnull=False) == expected_ids(lambda w: w.notes is not None)
    assert listed(seeded, price__isnull=True) == expected_ids(lambda w: w.price is None)
    # A JSON value is NULL or not like any other; only comparing one is refused.
    assert listed(seeded, attributes__isnull=False) == expected_ids(lambda w: w.attributes is not None)


@pytest.mark.parametrize(
    "lookup", ["notes", "notes__ne", "notes__gt", "notes__icontains", "notes__istartswith"]
)
def test_it_refuses_to_compare_with_none(seeded: Repository[Widget], lookup: str) -> None:
    # A text lookup would otherwise search for the word "None".
    with pytest.raises(InvalidInput, match="isnull"):
        seeded.list(filters={lookup: None})


def test_it_filters_case_insensitively_on_text(seeded: Repository[Widget]) -> None:
    assert listed(seeded, name__icontains="GEAR") == expected_ids(lambda w: "gear" in w.name.lower())
    assert listed(seeded, name__istartswith="e") == expected_ids(lambda w: w.name.lower().startswith("e"))


def test_it_finds_a_substring_in_the_middle_but_startswith_only_at_the_start(
    seeded: Repository[Widget],
) -> None:
    assert listed(seeded, name__icontains="spring") == ["b"]
    assert listed(seeded, name__istartswith="spring") == []


@pytest.mark.parametrize(
    ("needle", "expected"),
    [
        ("100%", ["percent"]),
        ("%", ["off", "percent"]),
        ("a_b", ["underscore"]),
        ("_", ["underscore"]),
        ("\\", ["backslash"]),
        ("\\%", []),
        ("'", ["quote"]),
    ],
    ids=["percent-word", "percent", "underscore-word", "underscore", "backslash", "escaped-percent", "quote"],
)
def test_it_matches_like_wildcards_in_text_literally(
    texts: Repository[Widget], needle: str, expected: list[str]
) -> None:
    assert listed(texts, name__icontains=needle) == sorted(expected)


def test_it_matches_literal_wildcards_at_the_start(texts: Repository[Widget]) -> None:
    assert listed(texts, name__istartswith="%") == ["off"]
    assert listed(texts, name__istartswith="_") == []
    assert listed(texts, name__istartswith="a_") == ["underscore"]


def test_it_lowercases_non_ascii_text_for_case_insensitive_lookups(texts: Repository[Widget]) -> None:
    assert listed(texts, name__icontains="école") == ["cafe"]
    assert listed(texts, name__istartswith="CAFÉ") == ["cafe"]


def test_it_refuses_text_lookups_on_a_non_text_column(seeded: Repository[Widget]) -> None:
    with pytest.raises(InvalidInput):
        seeded.list(filters={"quantity__icontains": "5"})


@pytest.mark.parametrize("of", [1, 2, 3, 5])
def test_it_cuts_a_columns_values_into_parts_that_hold_every_row_once(
    seeded: Repository[Widget], of: int
) -> None:
    parts = [listed(seeded, widget_id__part=Part(index, of=of)) for index in range(of)]

    # Every row in exactly one part: a negative fingerprint (half of them) must land in a part too.
    assert sorted(key for part in parts for key in part) == expected_ids(lambda w: True)
    if of > 1:
        assert max(len(part) for part in parts) < len(seven_widgets())  # spread, not all in one


def test_it_puts_equal_values_in_the_same_part_and_null_in_none(seeded: Repository[Widget]) -> None:
    kinds = [
        {widget.kind for widget in seeded.list(filters={"kind__part": Part(index, of=2)})}
        for index in range(2)
    ]
    assert kinds[0].isdisjoint(kinds[1])
    assert kinds[0] | kinds[1] == {w.kind for w in seven_widgets()}
    with_notes = [listed(seeded, notes__part=Part(index, of=2)) for index in range(2)]
    assert sorted(with_notes[0] + with_notes[1]) == expected_ids(lambda w: w.notes is not None)


@pytest.mark.parametrize(
    ("lookup", "value"),
    [("quantity__part", Part(0, of=2)), ("widget_id__part", 1), ("tags__part", Part(0, of=2))],
)
def test_it_refuses_a_part_that_is_not_a_part_of_a_text_column(
    seeded: Repository[Widget], lookup: str, value: object
) -> None:
    with pytest.raises(InvalidInput, match="a part is a Part"):
        seeded.list(filters={lookup: value})


@pytest.mark.parametrize(("index", "of"), [(2, 2), (-1, 2), (0, 0), (True, 2), (0, 2.0)])
def test_it_refuses_to_build_a_part_outside_its_whole(index: object, of: object) -> None:
    with pytest.raises(ValueError, match="index < of"):
        Part(index, of=of)  # type: ignore[arg-type]


def test_it_compares_two_columns_of_the_same_row(seeded: Repository[Widget]) -> None:
    assert listed(seeded, used__lt=Col("quota")) == expected_ids(
        lambda w: w.quota is not None and w.used < w.quota
    )
    assert listed(seeded, used__gte=Col("quota")) == expected_ids(
        lambda w: w.quota is not None and w.used >= w.quota
    )
    assert listed(seeded, used=Col("quota")) == expected_ids(lambda w: w.used == w.quota)


def test_it_refuses_a_column_comparison_with_a_set_lookup(seeded: Repository[Widget]) -> None:
    with pytest.raises(InvalidInput):
        seeded.list(filters={"used__icontains": Col("quota")})


@pytest.mark.parametrize("lookup", ["attributes", "tags", "tags__in", "tags__isnull"])
def test_it_refuses_to_filter_on_json_or_repeated_columns(seeded: Repository[Widget], lookup: str) -> None:
    with pytest.raises(InvalidInput):
        seeded.list(filters={lookup: ["x"]})


def test_it_refuses_an_unknown_lookup(seeded: Repository[Widget]) -> None:
    with pytest.raises(InvalidInput, match="contains"):
        seeded.list(filters={"name__contains": "x"})


# --- ordering and pagination ----------------------------------------------------------------------
def test_it_orders_ascending_with_the_key_breaking_ties(seeded: Repository[Widget]) -> None:
    expected = [w.widget_id for w in sorted(seven_widgets(), key=lambda w: (w.quantity, w.widget_id))]
    assert ids(seeded.list(order_by=["quantity"])) == expected


def test_it_orders_descending_with_the_key_breaking_ties(seeded: Repository[Widget]) -> None:
    expected = [w.widget_id for w in sorted(seven_widgets(), key=lambda w: (-w.quantity, w.widget_id))]
    assert ids(seeded.list(order_by=["-quantity"])) == expected


def test_it_orders_on_several_columns(seeded: Repository[Widget]) -> None:
    expected = [w.widget_id for w in sorted(seven_widgets(), key=lambda w: (w.kind, -w.used, w.widget_id))]
    assert ids(seeded.list(order_by=["kind", "-used"])) == expected


def test_it_orders_by_descending_key(seeded: Repository[Widget]) -> None:
    assert ids(seeded.list(order_by=["-widget_id"])) == sorted(expected_ids(lambda w: True), reverse=True)


def test_it_orders_by_key_when_no_order_is_given(seeded: Repository[Widget]) -> None:
    assert ids(seeded.list()) == expected_ids(lambda w: True)


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_it_pages_without_overlap_or_gaps(seeded: Repository[Widget], size: int) -> None:
    full = ids(seeded.list(order_by=["-quantity"]))
    pages = [
        ids(seeded.list(order_by=["-quantity"], limit=size, offset=offset)) for offset in range(0, 8, size)
    ]
    assert all(len(page) <= size for page in pages)
    assert [key for page in pages for key in page] == full
    assert len(full) == 7


def test_it_returns_nothing_past_the_last_page(seeded: Repository[Widget]) -> None:
    assert seeded.list(limit=5, offset=7) == []


def test_it_applies_an_offset_without_a_limit(seeded: Repository[Widget]) -> None:
    assert ids(seeded.list(offset=5)) == expected_ids(lambda w: True)[5:]


def test_it_accepts_a_zero_limit(seeded: Repository[Widget]) -> None:
    assert seeded.list(limit=0) == []


@pytest.mark.parametrize(("limit", "offset"), [(-1, 0), (10_001, 0), (5, -1), ("5", 0), (5, "1")], ids=str)
def test_it_refuses_an_out_of_range_limit_or_offset(
    seeded: Repository[Widget], limit: object, offset: object
) -> None:
    with pytest.raises(InvalidInput):
        seeded.list(limit=limit, offset=offset)  # type: ignore[arg-type]


# --- counts and pages ------------------------------------------------------------------------------
def test_it_counts_all_rows_and_filtered_rows(seeded: Repository[Widget]) -> None:
    assert seeded.count() == 7
    assert seeded.count(filters={"kind": "GEAR"}) == len(expected_ids(lambda w: w.kind == "GEAR"))
    assert seeded.count(filters={"kind": "nothing"}) == 0


def test_it_counts_an_empty_table_as_zero(widgets: Repository[Widget]) -> None:
    assert widgets.count() == 0
    assert widgets.list() == []


def test_it_returns_a_page_with_the_total_of_all_matches(seeded: Repository[Widget]) -> None:
    matching = expected_ids(lambda w: w.quantity >= 3)
    page = seeded.page(filters={"quantity__gte": 3}, order_by=["widget_id"], limit=2, offset=2)
    assert ids(page.items) == matching[2:4]
    assert (page.total, page.limit, page.offset) == (len(matching), 2, 2)


def test_it_searches_any_of_several_fields_and_counts_the_same_rows(widgets: Repository[Widget]) -> None:
    widgets.insert(
        make_widget("a", name="Acme Corp", notes="x"),
        make_widget("b", name="Other", notes="acme partner"),
        make_widget("c", name="Unrelated", notes=None),
    )
    search = Search(fields=("name", "notes"), term="ACME")

    found = widgets.list(search=search, order_by=("widget_id",))

    assert [w.widget_id for w in found] == ["a", "b"]
    assert widgets.count(search=search) == 2
    assert widgets.page(search=search, filters={"widget_id__ne": "a"}).total == 1
