from __future__ import annotations

from django.apps import AppConfig


class BigQueryBackendConfig(AppConfig):
    name = "bigquery_backend"
    verbose_name = "BigQuery backend"

    def ready(self) -> None:
        from bigquery_backend import client

        client.connect_setting_signals()
