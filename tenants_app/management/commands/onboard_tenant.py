"""`manage.py onboard_tenant`: onboard a tenant (or finish an interrupted onboarding) from the shell."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bigquery_backend.exceptions import BigQueryError
from tenants_app.log_context import command_log_context
from tenants_app.services.errors import ServiceError, ValidationFailed
from tenants_app.services.onboarding import OnboardingResult, tenant_onboard, tenant_onboard_validate
from tenants_app.services.plans import PLANS

KEY_WARNING = "Store this API key now: it is shown only once and cannot be retrieved later."


class Command(BaseCommand):
    help = (
        "Onboard a tenant: profile, subscription, usage row, dataset with tables and views, reader "
        "access and the first API key, printed once. Running it again finishes an interrupted onboarding."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant_id", metavar="TENANT_ID", help="3-50 lowercase letters, digits or _")
        parser.add_argument("--company", required=True, help="company name (2-200 characters)")
        parser.add_argument("--email", required=True, help="the tenant administrator's email address")
        parser.add_argument(
            "--plan", required=True, type=str.upper, help=f"subscription plan: {', '.join(PLANS)}"
        )
        parser.add_argument(
            "--created-by",
            default=None,
            help="who onboards the tenant, for the audit columns (default: cli:<your OS user name>)",
        )
        parser.add_argument("--dry-run", action="store_true", help="validate and check; change nothing")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    @command_log_context
    def handle(self, *args: Any, **options: Any) -> None:
        request = {
            "tenant_id": options["tenant_id"],
            "company_name": options["company"],
            "admin_email": options["email"],
            "plan": options["plan"],
            "created_by": options["created_by"] or f"cli:{_os_user()}",
        }
        as_json: bool = options["json"]
        verbosity: int = options["verbosity"]
        try:
            if options["dry_run"]:
                tenant_onboard_validate(**request)
            else:
                result = tenant_onboard(**request)
        except ServiceError as exc:
            raise CommandError(_describe_error(exc)) from None
        except BigQueryError as exc:
            raise CommandError(f"BigQuery: {exc}") from None

        if options["dry_run"]:
            if as_json:
                self.stdout.write(json.dumps({"dry_run": True, "valid": True, **request}, indent=2))
            elif verbosity >= 1:
                self.stdout.write(
                    f"Dry run: tenant {request['tenant_id']} can be onboarded on plan {request['plan']}; "
                    "nothing was written."
                )
            return
        if as_json:
            self.stdout.write(json.dumps(_as_dict(result), indent=2))
            return
        self._print(result, verbosity)

    def _print(self, result: OnboardingResult, verbosity: int) -> None:
        tenant_id = result.profile.tenant_id
        if verbosity >= 2:
            for step in result.performed:
                self.stdout.write(f"  {step}: {self.style.SUCCESS('done')}")
            for step in result.skipped:
                self.stdout.write(f"  {step}: nothing to do")
        if verbosity >= 1:
            verb = "Finished the onboarding of" if result.resumed else "Onboarded"
            plan = result.subscription.plan_name
            self.stdout.write(f"{verb} tenant {tenant_id} (plan {plan}, dataset {result.dataset_id}).")
        if result.api_key is not None:
            # The warning goes to stderr so that `--verbosity 0` leaves only the key on stdout.
            self.stderr.write(self.style.WARNING(KEY_WARNING))
            if verbosity >= 1:
                self.stdout.write(f"API key {result.api_key.row.api_key_id}: {result.api_key.plaintext}")
            else:
                self.stdout.write(result.api_key.plaintext)
        elif result.api_key_already_issued and verbosity >= 1:
            self.stdout.write(
                f"The initial API key was issued by an earlier run and cannot be shown again; "
                f"rotate {result.profile.tenant_id}_initial if it was lost."
            )


def _as_dict(result: OnboardingResult) -> dict[str, Any]:
    issued = result.api_key
    return {
        "tenant_id": result.profile.tenant_id,
        "status": result.profile.status,
        "plan": result.subscription.plan_name,
        "dataset_id": result.dataset_id,
        "resumed": result.resumed,
        "steps_performed": result.performed,
        "steps_skipped": result.skipped,
        "api_key": None
        if issued is None
        else {
            "api_key_id": issued.row.api_key_id,
            "key": issued.plaintext,
            "key_prefix": issued.row.key_prefix,
            "scopes": list(issued.row.scopes),
            "warning": KEY_WARNING,
        },
        "api_key_already_issued": result.api_key_already_issued,
    }


def _describe_error(exc: ServiceError) -> str:
    if isinstance(exc, ValidationFailed) and exc.errors:
        fields = "\n".join(f"  {name}: {' '.join(reasons)}" for name, reasons in exc.errors.items())
        return f"invalid input:\n{fields}"
    return exc.message


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # No login name in containers that run with an arbitrary uid.
        return "unknown"
