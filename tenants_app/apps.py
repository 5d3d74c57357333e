from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class TenantsAppConfig(AppConfig):
    name = "tenants_app"
    verbose_name = "Tenants"

    def ready(self) -> None:
        # Registers the OpenAPI security schemes of our authenticators.
        import tenants_app.api.schema  # noqa: F401
        from convergence.checks import check_data_dir_private
        from tenants_app.kms import connect_setting_signals

        connect_setting_signals()
        # Cached admin and worker tokens go stale when their user or its groups change.
        from tenants_app.services.admin_tokens import token_cache_connect

        token_cache_connect()
        # BigQuery jobs are counted for /metrics by an observer of the (tenant-agnostic) gateway.
        from tenants_app.metrics import metrics_connect

        metrics_connect()
        # Registered here because the project package `convergence` is no app of its own: `check`,
        # `runserver` and `migrate` then refuse a data directory that other local accounts can read.
        checks.register(check_data_dir_private, checks.Tags.security)
