from __future__ import annotations

from django.apps import AppConfig


class TenantsAppConfig(AppConfig):
    name = "tenants_app"
    verbose_name = "Tenants"

    def ready(self) -> None:
        # Registers the OpenAPI security schemes of our authenticators.
        import tenants_app.api.schema  # noqa: F401
        from tenants_app.kms import connect_setting_signals

        connect_setting_signals()
