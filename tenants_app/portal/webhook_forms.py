"""Forms of the portal's webhook pages: the service checks the URL and events; these only shape input."""

from __future__ import annotations

from django import forms

from tenants_app.services.notifications import EVENT_TYPES
from tenants_app.services.webhook_delivery import MAX_URL_LENGTH
from tenants_app.services.webhooks import MAX_DESCRIPTION_LENGTH

DELIVERIES_PER_PAGE = 20


class WebhookCreateForm(forms.Form):
    # A plain text field: the one URL rule (https, public address) is the service's, shown on this field.
    url = forms.CharField(
        label="URL",
        max_length=MAX_URL_LENGTH,
        strip=True,
        help_text="An https:// URL on a public address; each delivery is signed with the endpoint's secret.",
    )
    event_types = forms.MultipleChoiceField(
        label="Events",
        choices=[(name, name) for name in EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: every event.",
    )
    description = forms.CharField(max_length=MAX_DESCRIPTION_LENGTH, required=False)


class DeliveryPageForm(forms.Form):
    """`?page=` of an endpoint's delivery log: a bad value is a 400 naming `page`, never a 500."""

    page = forms.IntegerField(min_value=1, required=False)

    def offset(self) -> int:
        return ((self.cleaned_data.get("page") or 1) - 1) * DELIVERIES_PER_PAGE
