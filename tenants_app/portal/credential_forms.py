"""The portal's cloud-credential form, shaped by provider: a provider select, then that provider's fields.

GCP takes its service-account key file (an upload, or its JSON pasted); every other provider takes the
fields its payload declares (services/credential_payloads.PAYLOAD_FIELDS), one input each. The form only
assembles the payload dict the API also takes; the service checks it, and its field errors are put back
on the input the user typed the value in, with that input's label.

Secret inputs never render a value: after an error the form keeps the name, the provider and every
identifier typed, and asks for the secret again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile

from tenants_app.labels import enum_label
from tenants_app.models import Provider
from tenants_app.services.credential_payloads import MAX_PAYLOAD_BYTES, PAYLOAD_FIELDS, payload_field
from tenants_app.services.credentials import MAX_NAME_LENGTH

# Providers whose payload is one document the provider hands out, taken whole rather than field by field.
KEY_FILE_PROVIDERS = (Provider.GCP,)
KEY_FILE_LABEL = "Service-account key file (JSON)"
KEY_JSON_LABEL = "Or paste the key file's JSON"
REENTER_HELP = "Stored encrypted, never shown again. For your safety, enter the secret again after an error."
# Service errors about the payload as a whole (not JSON, too large) rather than one of its fields.
WHOLE_PAYLOAD = "payload"


def input_name(provider: str, field: str) -> str:
    """A provider's input for one payload field: prefixed, so that every provider's fields fit one form."""
    return f"{provider.lower()}_{field}"


def key_file_inputs(provider: str) -> tuple[str, str]:
    """(upload, pasted JSON) inputs of a key-file provider."""
    return input_name(provider, "key_file"), input_name(provider, "key_json")


class SecretTextarea(forms.Textarea):
    """A textarea that never renders what was typed: a secret is not echoed back, even on errors."""

    def format_value(self, value: Any) -> None:
        return None


@dataclass(frozen=True)
class ProviderFieldset:
    """One provider's inputs, shown together; the page shows the chosen provider's only (static JS)."""

    provider: str
    title: str
    fields: list[forms.BoundField]


def _secret_input() -> forms.PasswordInput:
    return forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"})


def _provider_inputs(provider: str) -> dict[str, forms.Field]:
    if provider in KEY_FILE_PROVIDERS:
        upload, pasted = key_file_inputs(provider)
        return {
            upload: forms.FileField(
                required=False,
                label=KEY_FILE_LABEL,
                widget=forms.FileInput(attrs={"accept": ".json,application/json"}),
                help_text="The .json key Google Cloud gave you for the service account "
                f"(at most {MAX_PAYLOAD_BYTES // 1024} KiB). {REENTER_HELP}",
            ),
            pasted: forms.CharField(
                required=False,
                strip=False,
                label=KEY_JSON_LABEL,
                widget=SecretTextarea(attrs={"rows": 6, "spellcheck": "false", "autocomplete": "off"}),
                help_text="Only if you cannot upload the file.",
            ),
        }
    inputs: dict[str, forms.Field] = {}
    for field in PAYLOAD_FIELDS[provider]:
        notes = [REENTER_HELP if field.secret else "", "" if field.required else "Optional."]
        inputs[input_name(provider, field.name)] = forms.CharField(
            # Required or not is the service's rule (PAYLOAD_FIELDS), checked once the provider is known.
            required=False,
            # A secret is passed on exactly as typed: the service refuses stray spaces, never trims them.
            strip=not field.secret,
            label=field.label,
            widget=_secret_input() if field.secret else forms.TextInput(attrs={"spellcheck": "false"}),
            help_text=" ".join(note for note in notes if note),
        )
    return inputs


class CredentialForm(forms.Form):
    """A credential's provider, name and payload inputs; `payload()` is what the service takes.

    `providers`: the choice offered (one, fixed, when a credential is replaced); `with_name`: a new
    credential is named, a replacement keeps its name.
    """

    def __init__(
        self,
        data: Any = None,
        files: Any = None,
        *,
        providers: Sequence[str] = tuple(Provider.values),
        with_name: bool = True,
    ) -> None:
        super().__init__(data, files)
        self.providers = tuple(providers)
        # The input a key file came in (upload or pasted), for its errors.
        self._key_input: str | None = None
        self._key_document: bytes | str | None = None
        if len(self.providers) > 1:
            self.fields["provider"] = forms.ChoiceField(
                choices=[(provider, enum_label(provider)) for provider in self.providers],
                help_text="Choose it first: the fields below are that provider's.",
            )
        if with_name:
            self.fields["name"] = forms.CharField(max_length=MAX_NAME_LENGTH)
        self._inputs: dict[str, list[str]] = {}
        for provider in self.providers:
            inputs = _provider_inputs(provider)
            self.fields.update(inputs)
            self._inputs[provider] = list(inputs)

    # --- rendering ------------------------------------------------------------------------------------
    def common_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("provider", "name") if name in self.fields]

    def fieldsets(self) -> list[ProviderFieldset]:
        return [
            ProviderFieldset(
                provider=provider,
                title=f"{enum_label(provider)} credential",
                fields=[self[name] for name in self._inputs[provider]],
            )
            for provider in self.providers
        ]

    # --- reading --------------------------------------------------------------------------------------
    def provider(self) -> str:
        """The provider whose inputs are read (the select's choice, or the one offered)."""
        if len(self.providers) == 1:
            return self.providers[0]
        return str(self.cleaned_data.get("provider") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        provider = self.provider()
        if provider in KEY_FILE_PROVIDERS:
            self._read_key_file(provider)
        return data

    def _read_key_file(self, provider: str) -> None:
        upload_input, pasted_input = key_file_inputs(provider)
        upload: UploadedFile | None = self.cleaned_data.get(upload_input)
        pasted = self.cleaned_data.get(pasted_input) or ""
        if upload is not None:
            # Checked before reading: the body limit (DATA_UPLOAD_MAX_MEMORY_SIZE, a 413) is far larger.
            if upload.size is None or upload.size > MAX_PAYLOAD_BYTES:
                self.add_error(
                    upload_input,
                    f"{KEY_FILE_LABEL}: at most {MAX_PAYLOAD_BYTES // 1024} KiB; a key file is about 2 KiB.",
                )
                return
            self._key_input, self._key_document = upload_input, upload.read()
        elif pasted.strip():
            self._key_input, self._key_document = pasted_input, pasted
        else:
            self.add_error(upload_input, f"{KEY_FILE_LABEL}: upload the key file, or paste its JSON below.")

    def payload(self) -> object:
        """The payload as the API takes it: a key file's bytes or text, or a dict of the typed fields."""
        provider = self.provider()
        if provider in KEY_FILE_PROVIDERS:
            return self._key_document
        typed = {
            field.name: self.cleaned_data.get(input_name(provider, field.name))
            for field in PAYLOAD_FIELDS[provider]
        }
        # Empty inputs are left out, as an API caller leaves out a field it does not use.
        return {name: value for name, value in typed.items() if value}

    # --- service errors -------------------------------------------------------------------------------
    def place_service_error(self, name: str, reason: str) -> tuple[str | None, str]:
        """(input, message) for the service's error on payload field `name`, named by the input's label."""
        if name in self.fields:
            return name, reason
        provider = self.provider()
        if provider in KEY_FILE_PROVIDERS:
            target = self._key_input or key_file_inputs(provider)[0]
            detail = reason if name == WHOLE_PAYLOAD else f"{name}: {reason}"
            return target, f"{self.fields[target].label}: {detail}"
        field = payload_field(provider, name)
        if field is not None:
            return input_name(provider, name), f"{field.label}: {reason}"
        return None, reason if name == WHOLE_PAYLOAD else f"{name}: {reason}"
