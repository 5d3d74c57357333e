from __future__ import annotations

from bigquery_backend.client import BigQueryGateway


def test_it_answers_a_query_through_the_real_client(gateway: BigQueryGateway) -> None:
    result = gateway.query("SELECT 1 + 1 AS two")
    assert result.rows == [{"two": 2}]
