"""The secret detectors: each kind found with its span, legitimate ids and values left alone."""

from __future__ import annotations

import hashlib
import json
import random
import string
import uuid
from typing import Any

import pytest

from tenants_app.services import secret_patterns as sp
from tenants_app.services.secret_patterns import (
    find_high_entropy,
    find_secrets,
    fingerprint,
    is_plain_name,
    is_secret_column_name,
    is_secret_field_name,
    is_service_account_info,
    is_suspicious_name,
    redact_secrets,
)

# Built from pieces, so that no secret-shaped literal sits in the repository for other scanners to trip on.
RANDOM = random.Random(6)  # noqa: S311 - fixed test data, not a secret
BASE62 = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = BASE62) -> str:
    return "".join(RANDOM.choice(alphabet) for _ in range(n))


CVG_KEY = "cvg_" + "live_" + rand(40)
ADMIN_TOKEN = "cvg_" + "admin_" + rand(40)
AWS_ID = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
AWS_SECRET = rand(40, BASE62 + "/+")
PEM = "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow" + rand(60) + "\n-----END RSA PRIVATE KEY-----"
JWT = "eyJ" + rand(20) + ".eyJ" + rand(30) + "." + rand(43)
SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "acme-prod",
    "private_key_id": rand(40, "0123456789abcdef"),
    "private_key": PEM,
    "client_email": "pipeline@acme-prod.iam.gserviceaccount.com",
}

PLANTED = [
    (f"worker used {CVG_KEY} to call back", sp.CONVERGENCE_KEY, CVG_KEY),
    (f"token={ADMIN_TOKEN}", sp.CONVERGENCE_KEY, ADMIN_TOKEN),
    (f"fetch failed for key {AWS_ID} in eu-west-1", sp.AWS_ACCESS_KEY_ID, AWS_ID),
    (f"aws_secret_access_key = {AWS_SECRET}", sp.AWS_SECRET_ACCESS_KEY, AWS_SECRET),
    (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', sp.AWS_SECRET_ACCESS_KEY, AWS_SECRET),
    (f"loaded key:\n{PEM}", sp.PRIVATE_KEY, PEM),
    (json.dumps(SERVICE_ACCOUNT), sp.GCP_SERVICE_ACCOUNT, json.dumps(SERVICE_ACCOUNT)),
    (f"GET /v1 -H 'Authorization: Bearer {rand(32)}'", sp.AUTHORIZATION_HEADER, None),
    (f"retrying with bearer {rand(24)}", sp.BEARER_TOKEN, None),
    (f"session {JWT} expired", sp.JWT, JWT),
    ("openai said 401 for sk-proj-" + rand(30), sp.LLM_API_KEY, None),
    ("anthropic: sk-ant-api03-" + rand(40), sp.LLM_API_KEY, None),
    ("AIza" + rand(35), sp.GCP_API_KEY, None),
    ("ghp_" + rand(36), sp.GITHUB_TOKEN, None),
    ("postgres://etl:" + rand(12) + "@db.internal:5432/costs", sp.URL_CREDENTIALS, None),
    (
        "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=" + rand(86) + "==",
        sp.AZURE_STORAGE_KEY,
        None,
    ),
]

# What tenant tables legitimately hold: ids, hashes, timestamps, names, paths, prose.
LEGIT = [
    # Seeded, not uuid4(): parametrized ids must be the same in every pytest-xdist worker.
    uuid.UUID(int=RANDOM.getrandbits(128), version=4).hex,
    str(uuid.UUID(int=RANDOM.getrandbits(128), version=4)),
    hashlib.sha256(b"x").hexdigest(),
    "run_3f9c0a1b2c3d_a1",
    "run_3f9c0a1b2c3d_a1_s0",
    "run_3f9c0a1b2c3d_a1_dq0",
    "t_4f1c9e2ab3de",
    "acme_0123456789ab_initial",
    "cvg_live_AbC123",  # a display prefix (key_prefix): not a secret
    "2031-03-18T12:00:00.000000+00:00",
    "GoogleCloudStorage2BigQuery",
    "ExpectColumnValuesToNotBeNull",
    "expect_column_values_to_not_be_null",
    "projects/acme-prod-123/datasets/Billing2024/tables/DailyCosts",
    "gs://acme-exports/Exports2024/daily_costs_20240318.csv",
    "arn:aws:iam::123456789012:role/PipelineRunner2024",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
    "HTTPError503ServiceUnavailable after 3 retries",
    "https://user@example.com/path",
    "column amount had 12 nulls (threshold 0)",
    "-----BEGIN PUBLIC KEY-----",
    "the bearer of bad news",
]


@pytest.mark.parametrize(
    ("text", "kind", "secret"), PLANTED, ids=[p[1] + str(i) for i, p in enumerate(PLANTED)]
)
def test_it_finds_each_kind_of_secret_and_where_it_is(text: str, kind: str, secret: str | None) -> None:
    matches = find_secrets(text)

    assert [m.kind for m in matches] == [kind]
    found = text[matches[0].start : matches[0].end]
    if secret is not None:
        assert secret.startswith(found) or found == secret
    assert found not in matches[0].reason


@pytest.mark.parametrize("value", LEGIT)
def test_it_leaves_ids_hashes_timestamps_and_prose_alone(value: str) -> None:
    assert find_secrets(value) == []
    assert find_high_entropy(value) == []


def test_it_finds_random_tokens_by_entropy_but_not_hex_digests() -> None:
    tokens = [rand(n, BASE62 + "+/") for n in (24, 32, 40, 64) for _ in range(25)]

    found = sum(1 for token in tokens if find_high_entropy(f"value {token} end"))

    # ~95% at 20 characters, ~99% from 32 (see the thresholds' comments): 100 tokens leave a margin.
    assert found >= 95
    assert not any(find_high_entropy(hashlib.sha256(t.encode()).hexdigest()) for t in tokens)


def test_it_redacts_only_the_secret_and_keeps_the_context() -> None:
    line = f"call failed: Authorization: Bearer {rand(30)} from postgres://etl:{rand(10)}@db key={CVG_KEY}"

    redacted = redact_secrets(line)

    assert redacted == (
        "call failed: Authorization: [redacted] from postgres://etl:[redacted]@db key=[redacted]"
    )


def test_it_tells_secret_names_from_names_that_only_mention_one() -> None:
    assert all(
        is_secret_field_name(n)
        for n in ("password", "db_password", "clientSecret", "api-key", "private_key", "access_token")
    )
    assert not any(is_secret_field_name(n) for n in ("secret_name", "token_budget", "key_column", "author"))
    assert all(is_secret_column_name(n) for n in ("user_password", "auth_token", "api_key", "credentials"))
    assert not any(is_secret_column_name(n) for n in ("pipeline_logging_id", "author", "status", "metadata"))


def test_it_tells_names_of_free_text_and_configuration_from_ids_and_times() -> None:
    suspicious = (
        "error_message",
        "run_metadata",
        "parameters",
        "failed_expectations",
        "authToken",
        "headers",
    )
    plain = ("status", "pipeline_logging_id", "api_key_id", "created_at", "monkey", "context", "step_name")

    assert [n for n in suspicious if not is_suspicious_name(n)] == []
    assert [n for n in plain if is_suspicious_name(n)] == []
    assert [n for n in ("job_id", "startedAt", "row_count") if not is_plain_name(n)] == []
    assert not is_plain_name("token")


def test_it_recognises_a_parsed_service_account_key() -> None:
    assert is_service_account_info(SERVICE_ACCOUNT)
    assert not is_service_account_info({"type": "service_account", "client_email": "x@y"})


def test_it_fingerprints_a_secret_stably_with_a_keyed_hash(settings: Any) -> None:
    first = fingerprint(CVG_KEY)

    assert fingerprint(CVG_KEY) == first
    assert fingerprint(ADMIN_TOKEN) != first
    # Keyed: not the plain sha256, so a report's reader cannot test guesses offline.
    assert first != hashlib.sha256(CVG_KEY.encode()).hexdigest()[:8]
    settings.SECRET_KEY = "another-deployment-" + rand(40)
    assert fingerprint(CVG_KEY) != first


def test_it_redacts_a_private_key_block_body_and_all_even_when_cut_short() -> None:
    # The body is the secret: masking the BEGIN line alone would leave the key readable.
    body = "MIIEow" + rand(60)
    whole = f"boom {PEM} done"
    cut = "boom -----BEGIN " + f"PRIVATE KEY-----\n{body}"

    assert sp.redact_secrets(whole) == "boom [redacted] done"
    assert body not in sp.redact_secrets(cut)
    assert sp.redact_secrets(cut).startswith("boom [redacted]")
