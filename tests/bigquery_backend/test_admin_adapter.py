"""The generic admin adapter (bigquery_backend/admin.py) over a throwaway `widgets` table in the emulator."""

from __future__ import annotations

import base64
import datetime
import html as html_lib
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.admin import AdminSite
from django.http import HttpRequest
from django.test import Client
from django.urls import path

from bigquery_backend.admin import BigQueryModelAdmin, ObjectTool
from bigquery_backend.client import get_gateway
from bigquery_backend.identifiers import check_dataset
from bigquery_backend.repository import Repository
from tests.bigquery_backend.conftest import new_widget_table
from tests.bigquery_backend.widgets import UTC, Widget, WidgetKind, WidgetTableFactory, make_widget

PAYLOAD = b"\x00\x01secret-bytes\xfe\xff"
NOTES = "internal note that must not show"


class WidgetAdmin(BigQueryModelAdmin):
    list_display = ("widget_id", "name", "kind", "quantity", "active", "created_at", "tags", "attributes")
    search_fields = ("name",)
    list_filter = ("kind", "active", "created_at", "due_on")
    exact_filter_fields = ("widget_id",)
    ordering = ("-created_at",)
    secret_fields = ("notes",)
    list_per_page = 5
    repository_parameter = "dataset"
    repository_parameter_label = "Dataset"
    read_only_usernames: set[str] = {"viewer"}

    def get_repository(self, request: HttpRequest) -> Repository[Widget] | None:
        dataset = request.GET.get("dataset")
        if not dataset:
            return None
        return Repository(Widget, dataset=check_dataset(dataset))

    def get_object_tools(self, request: HttpRequest) -> list[ObjectTool]:
        return [("Make a widget", "/make/", True), ("Widget report", "/report/", False)]

    def has_operation_permission(self, request: HttpRequest) -> bool:
        return request.user.get_username() not in self.read_only_usernames


site = AdminSite(name="widgetadmin")
site.register(Widget, WidgetAdmin)
urlpatterns = [path("wadmin/", site.urls)]
pytestmark = pytest.mark.urls(__name__)

BASE = "/wadmin/bigquery_backend/widget/"


def page_of(client: Client, dataset: str, **params: Any) -> tuple[int, str]:
    response = client.get(BASE + "?" + urlencode({"dataset": dataset, **params}))
    return response.status_code, response.content.decode()


def row_ids(page: str) -> list[str]:
    return re.findall(r'<th class="field-widget_id">\s*<a href="[^"]*"><bdi>([^<]+)</bdi></a>', page)


def header_links(page: str) -> dict[str, str]:
    """Column name -> the href of its header (primary sort link)."""
    found = re.findall(r'class="column-(\w+)[^"]*">.*?<div class="text"><a href="([^"]+)"', page, re.S)
    return {name: html_lib.unescape(href) for name, href in found}


@pytest.fixture(scope="module")
def twelve(shared_widget_table: WidgetTableFactory) -> str:
    """Twelve widgets, a day apart, of three kinds; the dataset name."""
    start = datetime.datetime(2024, 5, 1, 9, tzinfo=UTC)
    rows = [
        make_widget(
            f"w{i:02d}",
            name=f"{'gear' if i % 3 == 0 else 'part'} {i:02d}",
            kind=[WidgetKind.GEAR, WidgetKind.SPRING, WidgetKind.LEVER][i % 3],
            quantity=(i * 7) % 12,
            active=i % 4 != 0,
            created_at=start + datetime.timedelta(days=i),
            due_on=datetime.date(2024, 6, 1) + datetime.timedelta(days=i),
            tags=["red", f"t{i}"],
            attributes={"size": i, "label": f"<b>{i}</b>"},
            notes=NOTES,
            payload=PAYLOAD,
        )
        for i in range(12)
    ]
    return shared_widget_table(*rows).dataset


# --- declarations ---------------------------------------------------------------------------------------
def test_it_passes_its_checks_when_secrets_stay_hidden() -> None:
    assert WidgetAdmin(Widget, site).check() == []


def test_it_refuses_declarations_that_would_show_a_secret_or_bytes() -> None:
    class Leaky(WidgetAdmin):
        list_display = ("widget_id", "notes", "payload")
        search_fields = ("notes", "quantity")
        list_filter = ("kind", "tags")
        secret_fields = ("notes", "no_such_field")

    messages = [error.msg for error in Leaky(Widget, site).check()]

    assert any("secret_fields names unknown field 'no_such_field'" in m for m in messages)
    assert any("list_display shows secret field 'notes'" in m for m in messages)
    assert any("list_display shows secret field 'payload'" in m for m in messages)  # bytes, undeclared
    assert any("search_fields shows secret field 'notes'" in m for m in messages)
    assert any("search field 'quantity' is not a text column" in m for m in messages)
    assert any("cannot filter on 'tags'" in m for m in messages)


# --- rendering ------------------------------------------------------------------------------------------
def test_it_renders_a_django_style_changelist(admin_client: Client, twelve: str) -> None:
    status, page = page_of(admin_client, twelve)

    assert status == 200
    for marker in ('id="changelist"', 'id="toolbar"', 'id="changelist-filter"', 'class="paginator"'):
        assert marker in page
    assert "12 widgets" in page
    assert row_ids(page) == ["w11", "w10", "w09", "w08", "w07"]  # newest first, 5 a page
    assert "Spring" in page  # choices show their labels
    assert "icon-yes.svg" in page
    assert "icon-no.svg" in page
    assert "red, t11" in page  # repeated strings as a list
    assert "&lt;b&gt;11&lt;/b&gt;" in page  # JSON escaped, never markup
    assert "Make a widget" in page
    assert "Widget report" in page


def test_it_never_renders_secret_fields_or_bytes(admin_client: Client, twelve: str) -> None:
    pages = [page_of(admin_client, twelve)[1]]
    detail = admin_client.get(f"{BASE}w03/change/?dataset={twelve}")
    assert detail.status_code == 200
    pages.append(detail.content.decode())

    for page in pages:
        assert NOTES not in page
        assert "secret-bytes" not in page
        assert base64.b64encode(PAYLOAD).decode() not in page
        assert PAYLOAD.hex() not in page
        assert "Payload" not in page
        assert "Notes" not in page


def test_it_shows_one_row_with_pretty_json_in_one_job(admin_client: Client, twelve: str) -> None:
    with get_gateway().count_jobs() as counter:
        response = admin_client.get(f"{BASE}w05/change/?dataset={twelve}")
    page = response.content.decode()

    assert response.status_code == 200
    assert counter.jobs == 1
    assert (
        '<pre class=\'bigquery-json\'>{\n  "label": "<b>5</b>",\n  "size": 5\n}</pre>'
        in html_lib.unescape(page)
    )
    assert "&lt;b&gt;5&lt;/b&gt;" in page
    assert "2024-05-06 09:00:00 UTC" in page  # to the second, with its zone: no second form beside it
    assert "2024-05-06T09:00:00" not in page
    assert "part 05" in page


def test_it_answers_404_for_a_missing_row_and_redirects_the_short_url(
    admin_client: Client, twelve: str
) -> None:
    missing = admin_client.get(f"{BASE}nope/change/?dataset={twelve}")
    short = admin_client.get(f"{BASE}w01/?dataset={twelve}")

    assert missing.status_code == 404
    assert "Widget &#x27;nope&#x27; does not exist." in missing.content.decode()
    assert short.status_code == 302
    assert short["Location"] == f"{BASE}w01/change/?dataset={twelve}"


def test_it_quotes_keys_with_slashes_in_row_links(
    admin_client: Client, shared_widget_table: WidgetTableFactory
) -> None:
    dataset = shared_widget_table(make_widget("a/b c", name="odd key")).dataset

    _, page = page_of(admin_client, dataset)
    link = re.search(r'<th class="field-widget_id">\s*<a href="([^"]+)">', page)
    assert link is not None
    response = admin_client.get(html_lib.unescape(link.group(1)))  # the link carries the dataset

    assert response.status_code == 200
    assert "odd key" in response.content.decode()


# --- search, filters, sorting, pagination --------------------------------------------------------------
def test_it_searches_case_insensitively(admin_client: Client, twelve: str) -> None:
    _, page = page_of(admin_client, twelve, q="GEAR")

    assert row_ids(page) == ["w09", "w06", "w03", "w00"]
    assert "4 results" in page
    assert f'<input type="hidden" name="dataset" value="{twelve}">' in page


def test_it_filters_by_choices_booleans_exact_values_and_date_ranges(
    admin_client: Client, twelve: str
) -> None:
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"kind__exact": "LEVER"}, ["w11", "w08", "w05", "w02"]),
        ({"active__exact": "0"}, ["w08", "w04", "w00"]),
        ({"kind__exact": "GEAR", "active__exact": "1"}, ["w09", "w06", "w03"]),
        ({"widget_id__exact": "w07"}, ["w07"]),
        # A date-only upper bound on a timestamp includes that whole day.
        ({"created_at__gte": "2024-05-03", "created_at__lte": "2024-05-05"}, ["w04", "w03", "w02"]),
        ({"created_at__gte": "2024-05-03T10:00:00+00:00", "created_at__lte": "2024-05-05"}, ["w04", "w03"]),
        ({"due_on__lte": "2024-06-02"}, ["w01", "w00"]),
    ]
    for params, expected in cases:
        status, page = page_of(admin_client, twelve, **params)
        assert status == 200, params
        assert row_ids(page) == expected, params
        assert "Clear all filters" in page


def test_it_marks_the_selected_filter_and_keeps_other_parameters_in_its_links(
    admin_client: Client, twelve: str
) -> None:
    _, page = page_of(admin_client, twelve, kind__exact="GEAR", q="gear", o="3")

    selected = re.search(r'<li class="selected"><a href="([^"]+)">Gear</a>', page)
    assert selected is not None
    spring = re.search(r'<a href="([^"]+)">Spring</a>', page)
    assert spring is not None
    href = html_lib.unescape(spring.group(1))
    assert f"dataset={twelve}" in href
    assert "q=gear" in href
    assert "o=3" in href
    assert "kind__exact=SPRING" in href


def test_it_sorts_by_clicking_column_headers(admin_client: Client, twelve: str) -> None:
    _, page = page_of(admin_client, twelve, q="gear")
    links = header_links(page)
    assert "attributes" not in links  # JSON cannot be sorted
    assert "tags" not in links

    _, by_quantity = page_of(admin_client, twelve, q="gear", o="3")
    # quantities: w00 0, w03 9, w06 6, w09 3
    assert row_ids(by_quantity) == ["w00", "w09", "w06", "w03"]
    assert 'class="column-quantity sortable sorted ascending"' in by_quantity

    flipped = admin_client.get(BASE + header_links(by_quantity)["quantity"]).content.decode()
    assert row_ids(flipped) == ["w03", "w06", "w09", "w00"]
    assert 'class="column-quantity sortable sorted descending"' in flipped

    _, two_keys = page_of(admin_client, twelve, o="2.-3", active__exact="1")
    # Gear (w03 9, w06 6, w09 3), then Lever (w02 2, w05 11, w11 5), Spring ... but 5 a page.
    assert row_ids(two_keys) == ["w03", "w06", "w09", "w05", "w11"]
    assert '<span class="sortpriority"' in two_keys


def test_it_pages_with_limit_and_offset_keeping_the_query(admin_client: Client, twelve: str) -> None:
    _, first = page_of(admin_client, twelve, o="0")
    _, last = page_of(admin_client, twelve, o="0", p="3")

    assert row_ids(first) == ["w00", "w01", "w02", "w03", "w04"]
    assert row_ids(last) == ["w10", "w11"]
    assert '<span class="this-page">3</span>' in last
    assert f"?dataset={twelve}&amp;o=0&amp;p=2" in first
    status, beyond = page_of(admin_client, twelve, p="4")
    assert status == 404
    assert "Page 4 does not exist: there are 3." in beyond


def test_it_answers_bad_parameters_with_a_400_that_says_why(admin_client: Client, twelve: str) -> None:
    cases = {
        "colour__exact": ("red", "Unknown filter or parameter: colour__exact"),
        "notes__exact": (NOTES, "Unknown filter or parameter: notes__exact"),
        "p": ("-1", "Page must be a whole number"),
        "o": ("7", "Cannot sort by 'attributes'"),
        "kind__exact": ("BOLT", "is not one of the choices"),
        "active__exact": ("maybe", "must be either True or False"),
        "created_at__gte": ("31/12/2024", "is not a date"),
        "due_on__lte": ("2024-13-01", "is not a date"),
        "q": ("x" * 201, "at most 200 characters"),
    }
    for name, (value, message) in cases.items():
        status, page = page_of(admin_client, twelve, **{name: value})
        assert status == 400, name
        assert message in html_lib.unescape(page), name


# --- the required parameter, missing tables, BigQuery errors --------------------------------------------
def test_it_asks_for_the_repository_parameter_first(admin_client: Client, twelve: str) -> None:
    asked = admin_client.get(BASE + "?kind__exact=GEAR").content.decode()
    refused = admin_client.get(BASE + "?dataset=no-dashes-allowed")
    missing = admin_client.get(BASE + "?dataset=no_such_dataset_here")

    assert 'name="dataset"' in asked
    assert '<input type="hidden" name="kind__exact" value="GEAR">' in asked
    assert refused.status_code == 400
    assert 'class="errorlist"' in refused.content.decode()
    assert missing.status_code == 404
    assert "The widgets table does not exist yet." in missing.content.decode()


# --- roles ----------------------------------------------------------------------------------------------
def test_it_sends_anyone_but_active_staff_to_the_login_page(client: Client, twelve: str, db: None) -> None:
    from django.contrib.auth.models import User

    for user in (None, User.objects.create_user("visitor", password="x")):
        if user is not None:
            client.force_login(user)
        response = client.get(f"{BASE}?dataset={twelve}")
        assert response.status_code == 302
        assert response["Location"].startswith("/wadmin/login/")


def test_it_hides_change_tools_from_users_without_operation_permission(
    client: Client, twelve: str, db: None
) -> None:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("viewer", password="x", is_staff=True))
    status, page = page_of(client, twelve)

    assert status == 200
    assert "Widget report" in page
    assert "Make a widget" not in page


def test_it_refuses_writes(admin_client: Client, twelve: str) -> None:
    assert admin_client.post(f"{BASE}?dataset={twelve}").status_code == 405
    assert admin_client.post(f"{BASE}w01/change/?dataset={twelve}").status_code == 405
    assert admin_client.get(f"{BASE}add/?dataset={twelve}", follow=True).status_code == 404


# --- page cost ------------------------------------------------------------------------------------------
def test_it_costs_two_jobs_per_list_page_whatever_the_table_size(admin_client: Client) -> None:
    gateway = get_gateway()
    start = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    small = new_widget_table(gateway, *[make_widget(f"s{i}", created_at=start) for i in range(3)])
    large = new_widget_table(gateway, *[make_widget(f"l{i:02d}", created_at=start) for i in range(30)])

    def jobs(dataset: str, **params: str) -> int:
        with gateway.count_jobs() as counter:
            status, _ = page_of(admin_client, dataset, **params)
        assert status == 200
        return counter.jobs

    for params in ({}, {"q": "widget", "kind__exact": "GEAR", "o": "-3.1", "p": "1"}):
        assert jobs(small.dataset, **params) == 2
        assert jobs(large.dataset, **params) == 2
    with gateway.count_jobs() as counter:
        _, page = page_of(admin_client, large.dataset, p="6")
    assert counter.jobs == 2
    assert row_ids(page) == [f"l{i:02d}" for i in range(25, 30)]  # same created_at: the key breaks ties


def test_it_shows_an_empty_table_as_one_empty_page(admin_client: Client, widgets: Repository[Widget]) -> None:
    status, page = page_of(admin_client, widgets.dataset)
    beyond, _ = page_of(admin_client, widgets.dataset, p="2")

    assert status == 200
    assert "No widgets." in page
    assert "0 widgets" in page
    assert beyond == 404


@pytest.mark.parametrize(
    "query",
    [
        "q=%00",
        "q=%ED%A0%80",  # a lone surrogate's bytes: not UTF-8
        "q=%25_%5C",
        "widget_id__exact=%00%27%22%5C",
        "o=0.0.-0",
        "o=",
        "p=",
        "p=1e3",
        "p=99999999999999999999",
        "created_at__gte=2024-02-30",
        "created_at__gte=9999-12-31T23:59:59-14:00",
        "created_at__lte=0001-01-01T00:00:00%2B14:00",
        "due_on__gte=0000-01-01",
        "active__isnull=True",
        "kind__exact=",
        "kind__exact=GEAR&kind__exact=LEVER",
    ],
)
def test_it_never_answers_500_to_odd_parameters(admin_client: Client, twelve: str, query: str) -> None:
    response = admin_client.get(f"{BASE}?dataset={twelve}&{query}")

    assert response.status_code in {200, 400, 404}, response.content.decode()[:500]


def test_it_links_rows_to_details_that_lead_back_to_the_same_list(admin_client: Client, twelve: str) -> None:
    _, page = page_of(admin_client, twelve, kind__exact="GEAR", o="3", p="1")
    link = re.search(r'<th class="field-widget_id">\s*<a href="([^"]+)"><bdi>w00</bdi></a>', page)
    assert link is not None

    detail = admin_client.get(html_lib.unescape(link.group(1)))
    back = re.search(r'<a href="([^"]+)">&larr; All widgets</a>', detail.content.decode())

    assert detail.status_code == 200
    assert back is not None
    assert html_lib.unescape(back.group(1)) == f"{BASE}?dataset={twelve}&kind__exact=GEAR&o=3&p=1"


def test_it_drops_secret_values_before_any_template_sees_the_row(admin_client: Client, twelve: str) -> None:
    response = admin_client.get(f"{BASE}w02/change/?dataset={twelve}")

    assert response.status_code == 200
    row = response.context["object"]
    assert row.widget_id == "w02"
    assert row.payload is None
    assert row.notes is None
    assert row.name == "part 02"


def test_it_redirects_a_bare_field_filter_to_its_exact_spelling(admin_client: Client, twelve: str) -> None:
    response = admin_client.get(BASE, {"dataset": twelve, "kind": "GEAR", "widget_id": "w03", "o": "1"})

    assert response.status_code == 302
    assert response["Location"] == f"{BASE}?dataset={twelve}&o=1&kind__exact=GEAR&widget_id__exact=w03"
    assert row_ids(admin_client.get(response["Location"]).content.decode()) == ["w03"]


def test_it_never_reads_secret_or_bytes_columns_from_bigquery(admin_client: Client, twelve: str) -> None:
    with get_gateway().count_jobs() as counter:
        assert page_of(admin_client, twelve, q="gear")[0] == 200
        assert admin_client.get(f"{BASE}w03/change/?dataset={twelve}").status_code == 200

    selects = [sql for sql in counter.statements if "COUNT(*)" not in sql]
    assert len(selects) == 2
    for sql in selects:
        assert "`name`" in sql
        assert "`notes`" not in sql
        assert "`payload`" not in sql


def test_it_reads_only_the_fields_asked_for_plus_the_key(shared_widget_table: WidgetTableFactory) -> None:
    repository = shared_widget_table(
        make_widget("only", name="n", notes="kept out", payload=b"x", tags=["a"])
    )

    (row,) = repository.list(fields=["name", "tags"])
    page = repository.page(fields=["quantity"])

    assert (row.widget_id, row.name, row.tags) == ("only", "n", ["a"])
    assert row.notes is None
    assert row.payload is None
    assert page.items[0].quantity == 1
    assert page.items[0].name is None
    assert page.total == 1
