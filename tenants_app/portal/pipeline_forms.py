"""Forms of the portal's pipeline operations: a template's parameters as fields, schedules, backfill.

Input shape only: the catalogue (`tenants_app/pipeline_templates.py`) and the services check the values,
and their errors (`parameters.<name>...`) are shown on the parameter's own field.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

from tenants_app.models import Provider
from tenants_app.pipeline_templates import PipelineTemplate
from tenants_app.services.errors import ServiceError
from tenants_app.services.pipelines import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY

PREFIX = "param_"
# Parameters typed as JSON documents in a text box; the others are one value each.
_JSON_TYPES = ("object", "expectations")
_BOOLEAN_CHOICES = [("", "(default)"), ("true", "true"), ("false", "false")]


class TemplateParametersForm(forms.Form):
    """One field per parameter of `template`; an empty field is "not given" (the default, or the
    config's value for a run-now override)."""

    def __init__(
        self, *args: Any, template: PipelineTemplate, values: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.template = template
        for parameter in template.parameters:
            self.fields[PREFIX + parameter.name] = _field(parameter, (values or {}).get(parameter.name))

    def parameters(self) -> dict[str, Any]:
        """The given values, typed (JSON parsed, booleans as booleans); call after `is_valid()`."""
        given: dict[str, Any] = {}
        for parameter in self.template.parameters:
            value = self.cleaned_data.get(PREFIX + parameter.name)
            if value not in (None, ""):
                given[parameter.name] = value
        return given

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for parameter in self.template.parameters:
            name = PREFIX + parameter.name
            raw = data.get(name)
            if parameter.type in _JSON_TYPES and raw:
                try:
                    data[name] = json.loads(raw)
                except ValueError:
                    self.add_error(name, "Write valid JSON.")
            elif parameter.type == "boolean" and raw:
                data[name] = raw == "true"
        return data


def add_parameter_errors(forms_: list[forms.Form], error: ServiceError) -> None:
    """Show a service's errors on the field they name: `parameters.<name>...` on that parameter's field,
    others on a field of the same name, the rest above the first form."""
    for name, reasons in error.errors.items():
        target, owner = _target(forms_, name)
        for reason in reasons:
            owner.add_error(target, reason if target else f"{name}: {reason}")
    if not error.errors:
        forms_[0].add_error(None, error.message)


def _target(forms_: list[forms.Form], name: str) -> tuple[str | None, forms.Form]:
    if name.startswith("parameters."):
        parameter = name.removeprefix("parameters.").split(".")[0].split("[")[0]
        name = PREFIX + parameter
    for form in forms_:
        if name in form.fields:
            return name, form
    return None, forms_[0]


def _field(parameter: Any, value: Any) -> forms.Field:
    label = parameter.name + (" *" if parameter.required else "")
    default = "" if parameter.default is None else f" Default: {json.dumps(parameter.default)}."
    options: dict[str, Any] = {"label": label, "required": False, "help_text": parameter.help + default}
    if parameter.type == "boolean":
        initial = "" if value is None else ("true" if value else "false")
        return forms.ChoiceField(choices=_BOOLEAN_CHOICES, initial=initial, **options)
    if parameter.type == "choice":
        return forms.ChoiceField(
            choices=[("", "(default)"), *((c, c) for c in parameter.choices)], initial=value, **options
        )
    if parameter.type in _JSON_TYPES:
        initial = None if value is None else json.dumps(value, indent=2)
        widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})
        return forms.CharField(widget=widget, initial=initial, strip=True, **options)
    if parameter.type == "sql":
        widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})
        return forms.CharField(widget=widget, initial=value, max_length=10_000, **options)
    return forms.CharField(initial=value, max_length=1024, **options)


class ScheduleCreateForm(forms.Form):
    provider = forms.ChoiceField(choices=[(value, value) for value in Provider.values])
    domain = forms.CharField(max_length=200, help_text="What the pipeline is about, e.g. billing.")
    schedule_cron = forms.CharField(
        label="Schedule (cron)",
        max_length=200,
        help_text="5 fields: minute hour day-of-month month day-of-week, e.g. 30 2 * * * (02:30 daily).",
    )
    timezone = forms.CharField(label="Time zone", max_length=64, initial="UTC", help_text="IANA name.")
    priority = forms.IntegerField(
        min_value=MIN_PRIORITY,
        max_value=MAX_PRIORITY,
        initial=DEFAULT_PRIORITY,
        help_text=f"{MIN_PRIORITY} (most urgent) to {MAX_PRIORITY} (least urgent).",
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Active (schedule runs now)")


class BackfillForm(forms.Form):
    start_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), help_text="YYYY-MM-DD")
    end_date = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}), help_text="YYYY-MM-DD, included; not after today."
    )


class ConfirmForm(forms.Form):
    """A destructive operation happens only from its confirmation page's button, never from a bare POST."""

    confirm = forms.CharField(widget=forms.HiddenInput, initial="yes", required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("confirm") != "yes":
            raise forms.ValidationError("Confirm with the button on this page.")
        return data


class RunCancelForm(ConfirmForm):
    reason = forms.CharField(max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}))
