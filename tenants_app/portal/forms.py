"""Forms of the portal's tenant operations: input shape only; the services apply the business rules."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from tenants_app.models import PlanName, SubscriptionStatus
from tenants_app.presentation import duration_ms
from tenants_app.services import api_key_rotation
from tenants_app.services.api_key_scopes import API_KEY_SCOPES, DEFAULT_API_KEY_SCOPES
from tenants_app.services.errors import ServiceError

# The service's grace periods, as people read them ("1 h", "1 d", "7 d").
ROTATION_GRACE_CHOICES = [
    (code, duration_ms(period.total_seconds() * 1000) if period else "None: the old key stops working now")
    for code, period in api_key_rotation.ROTATION_GRACE_CHOICES.items()
]


def add_service_errors(form: forms.Form, error: ServiceError) -> None:
    """Show a service's field errors on the form's fields, others above the form, as is a message without
    fields. A form whose inputs are not named as the service's fields (the credential form: one input per
    provider's payload field) says where each goes with `place_service_error(name, reason)`."""
    place = getattr(form, "place_service_error", None)
    placed = False
    for name, reasons in error.errors.items():
        for reason in reasons:
            if place is not None:
                form.add_error(*place(name, reason))
            elif name in form.fields:
                form.add_error(name, reason)
            else:
                form.add_error(None, f"{name}: {reason}")
            placed = True
    if not placed:
        form.add_error(None, error.message)


class OnboardForm(forms.Form):
    tenant_id = forms.CharField(
        max_length=50,
        help_text="3-50 lowercase letters, digits or underscores; also names the tenant's dataset.",
    )
    company_name = forms.CharField(max_length=200)
    admin_email = forms.EmailField(max_length=254, label="Admin email")
    plan = forms.ChoiceField(choices=PlanName.choices)


class TenantEditForm(forms.Form):
    company_name = forms.CharField(max_length=200)
    admin_email = forms.EmailField(max_length=254, label="Admin email")


class PlanChangeForm(forms.Form):
    plan = forms.ChoiceField(choices=PlanName.choices, label="New plan")


# What each limit is called on every page (forms, previews, the tenant page).
LIMIT_LABELS = {
    "daily_limit": "Daily pipeline runs",
    "monthly_limit": "Monthly pipeline runs",
    "concurrent_limit": "Concurrent pipeline runs",
    "max_providers": "Cloud providers",
    "api_calls_per_minute": "API calls a minute",
    "api_calls_per_hour": "API calls an hour",
}


def limit_label(name: str) -> str:
    return LIMIT_LABELS.get(name, name.replace("_", " "))


class LimitsForm(forms.Form):
    """Per-tenant overrides of the plan's limits; each field starts at the limit in force."""

    reset = forms.MultipleChoiceField(
        required=False,
        label="Back to the plan's figure",
        widget=forms.CheckboxSelectMultiple,
        choices=list(LIMIT_LABELS.items()),
        help_text="A ticked limit takes the plan's figure, whatever the box above says.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = {name: forms.IntegerField(label=label, min_value=1) for name, label in LIMIT_LABELS.items()}
        # The limits first, the reset choices after them, as the page reads.
        self.fields = {**limits, "reset": self.fields["reset"]}


class SubscriptionStatusForm(forms.Form):
    status = forms.ChoiceField(choices=SubscriptionStatus.choices)
    trial_end_date = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Required for TRIAL (YYYY-MM-DD).",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("status") == SubscriptionStatus.TRIAL and not data.get("trial_end_date"):
            self.add_error("trial_end_date", "A trial needs an end date.")
        return data


class OffboardForm(forms.Form):
    confirm_tenant_id = forms.CharField(
        max_length=50,
        label="Type the tenant id to confirm",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    purge_dataset = forms.BooleanField(
        required=False,
        label="Also delete the tenant's dataset (pipeline runs, step logs, DQ results) for good",
    )

    def __init__(self, *args: Any, tenant_id: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant_id = tenant_id

    def clean_confirm_tenant_id(self) -> str:
        value = self.cleaned_data["confirm_tenant_id"].strip()
        if value != self.tenant_id:
            raise ValidationError("Does not match the tenant id.")
        return value


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in API_KEY_SCOPES],
        widget=forms.CheckboxSelectMultiple,
        initial=list(DEFAULT_API_KEY_SCOPES),
        help_text="Starts with the read-only scopes: tick more only for what the key must change. "
        "pipelines:execute uses the tenant's quota: grant it only to systems that run pipelines.",
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires at (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: never expires.",
    )

    def clean_expires_at(self) -> Any:
        value = self.cleaned_data.get("expires_at")
        if value is not None and timezone.is_naive(value):
            value = timezone.make_aware(value, timezone.get_current_timezone())
        return value


class ApiKeyRotateForm(forms.Form):
    grace = forms.ChoiceField(
        choices=ROTATION_GRACE_CHOICES,
        initial="24h",
        label="Grace period",
        help_text="How long the old key keeps working after the new one is issued.",
    )


class ApiKeyRevokeForm(forms.Form):
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}))
