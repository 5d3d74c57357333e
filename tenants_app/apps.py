from __future__ import annotations

from django.apps import AppConfig


class TenantsAppConfig(AppConfig):
    name = "tenants_app"
    verbose_name = "Tenants"

    def ready(self) -> None:
        from tenants_app.kms import connect_setting_signals

        connect_setting_signals()
