"""What is a secret (tenants_app.secrets): names in every spelling, values of each kind, JSON walks.

Tables first: names that must and must not count as secrets, values that must and must not be found.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from typing import Any

import pytest

from tenants_app import secrets as sp
from tenants_app.models import Provider
from tenants_app.secrets import (
    SecretPath,
    find_high_entropy,
    find_secret_paths,
    find_secrets,
    fingerprint,
    is_plain_name,
    is_secret_name,
    is_sensitive_name,
    is_service_account_info,
    is_suspicious_name,
    redact_secrets,
    redact_value,
)
from tenants_app.services.credentials import credential_validate

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
BASIC = base64.b64encode(("etl:" + rand(12)).encode()).decode()
SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "acme-prod",
    "private_key_id": rand(40, "0123456789abcdef"),
    "private_key": PEM,
    "client_email": "pipeline@acme-prod.iam.gserviceaccount.com",
}

# --- names ----------------------------------------------------------------------------------------
SECRET_NAMES = [
    # each case style
    "dbPassword", "refreshToken", "sessionCookie", "privateKeyPem", "secretAccessKey", "accessKeyId",
    "DbPassword", "ClientSecret", "AWSSecretAccessKey", "OAuth2Token",
    "db_password", "client_secret", "refresh_token", "private_key", "aws_session_token",
    "x-api-key", "api-key", "x-auth-token", "proxy-authorization", "x-amz-security-token",
    "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "GITHUB_TOKEN", "HTTP_COOKIE", "HTTP_X_API_KEY",
    "db.password", "spring.datasource.password", "auth.bearer",
    # plural and compound forms
    "passwords", "tokens", "secrets", "credentials", "cookies", "apiKeys", "api_keys", "dsns",
    "connectionString", "connection_strings", "conn_str", "signing_key", "encryption_keys",
    "storageAccountKey", "webhook_secret", "authorization_code",
    # short names and single words
    "pwd", "passwd", "pw", "pass", "db_pass", "passphrase", "dsn", "auth", "bearer", "cookie", "creds",
    "authorization", "Authorization", "signature",
    # glued into one word, with a number, or in another form that still holds the secret
    "dbpassword", "apikey", "clientsecret", "accesstoken", "sessionid", "password2", "token_v2",
    "password_b64", "client_secret_value", "api_key_encrypted", "token_hash", "api_key_hash",
    # decided: a web session's id is its bearer credential; the AWS key id is half the credential
    "session_id", "sessionId",
]  # fmt: skip
NOT_SECRET_NAMES = [
    "region", "table", "dataset", "target", "window_days", "labels", "status", "scopes", "fingerprint",
    # `key` alone is a sort, cache or dict key (the audit log still drops an exact `key`, see below)
    "key", "keys", "sort_key", "partition_key", "primary_key", "cache_key", "idempotency_key",
    "key_prefix", "key_id", "key_column", "kms_key_name", "public_key",
    # about a secret, not the secret: ids, names, kinds, counts, times, places
    "api_key_id", "private_key_id", "replaced_by_key_id", "initial_key_prefix", "token_prefix",
    "secret_name", "secret_ref", "secretArn", "credential_type", "credential_name", "credential_id",
    "auth_type", "auth_method", "authMode", "token_type", "token_uri", "signature_version",
    "cookie_domain", "cookie_max_age", "bearer_format", "password_min_length", "password_policy",
    "password_changed_at", "passwordChangedAt", "token_expires_in", "api_keys_revoked",
    "cloud_creds_deactivated", "api_key_copies", "token_budget",
    # LLM token counts
    "max_tokens", "maxTokens", "MAX_TOKENS", "prompt_tokens", "completion_tokens", "total_tokens",
    "tokens_per_minute", "tokens_used", "token_count",
    # yes/no questions about a secret
    "has_password", "is_secret", "use_auth", "require_token",
    # `pass` only ends a secret's name: these are data-quality figures
    "pass_rate", "pass_count", "expectations_passed",
    # words that merely contain a secret word
    "author", "authority", "bypass", "passenger", "compass", "tokenizer", "monkey", "keyboard",
    "session", "session_count", "secretary",
]  # fmt: skip
# Not secrets themselves, but derived from one or holding one: dropped from audit entries and logs.
SENSITIVE_ONLY_NAMES = ["key", "key_hash", "payload", "request_payload", "plaintext", "ciphertext",
                        "encrypted_response", "cipher"]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_it_recognises_a_secret_name_in_any_spelling(name: str) -> None:
    assert is_secret_name(name)
    assert is_sensitive_name(name)


@pytest.mark.parametrize("name", NOT_SECRET_NAMES)
def test_it_leaves_names_that_are_not_secrets(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize("name", SENSITIVE_ONLY_NAMES)
def test_it_keeps_names_derived_from_secrets_out_of_audit_and_logs(name: str) -> None:
    assert (is_secret_name(name), is_sensitive_name(name)) == (False, True)


def test_it_only_runs_the_field_detector_on_text_holding_a_piece_of_a_secret_name() -> None:
    # The detector of `name=value` runs only where a needle occurs: every term must contain one.
    terms = [*sp._SECRET_WORDS, *sp._SECRET_LAST_WORDS, *("_".join(c) for c in sp._SECRET_COMPOUNDS)]
    terms += [*sp._DERIVED_WORDS, *sp._DERIVED_LAST_WORDS, "key"]

    assert [t for t in terms if not any(needle in t for needle in sp.NAME_NEEDLES)] == []


# --- values ---------------------------------------------------------------------------------------
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
    # Cut short: 12 random characters of a key still narrow the search a lot.
    (f"retrying with {CVG_KEY[:21]}", sp.CONVERGENCE_KEY, CVG_KEY[:21]),
    ("-----BEGIN " + "OPENSSH PRIVATE KEY-----\n" + rand(70), sp.PRIVATE_KEY, None),
    ("ASIA" + rand(16, string.ascii_uppercase + string.digits) + " expired", sp.AWS_ACCESS_KEY_ID, None),
    ("slack said invalid_auth for xoxb-" + rand(24), sp.SLACK_TOKEN, None),
    ("Authorization: Basic " + BASIC, sp.AUTHORIZATION_HEADER, None),
    ("proxy sent basic " + BASIC, sp.BASIC_CREDENTIALS, BASIC),
    ("Cookie: theme=dark; sessionid=" + rand(32), sp.CREDENTIAL_HEADER, None),
    ("X-API-Key: " + rand(32), sp.CREDENTIAL_HEADER, None),
    # Values of fields named like a secret, in JSON, reprs, query strings and keyword arguments.
    ('{"dbPassword": "correct horse battery"}', sp.SECRET_NAMED_FIELD, "correct horse battery"),
    ("connect(user='etl', password='hunter2x')", sp.SECRET_NAMED_FIELD, "hunter2x"),
    ("GET /export?page=2&api_key=hunter2x&format=csv", sp.SECRET_NAMED_FIELD, "hunter2x"),
    ("{'connectionString': 'Server=db;Password=hunter2x'}", sp.SECRET_NAMED_FIELD, None),
    ('{"refresh-token": "abc12345"}', sp.SECRET_NAMED_FIELD, "abc12345"),
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
    # Our tenant ids, dates, and text that only mentions a secret.
    "acme_corp",
    "tenant_2024_eu",
    "2031-03-18",
    "basic validation failed for column amount",
    "Authorization: failed for user etl",
    "max_tokens=4096 token_count=12 password_changed_at=2031-03-18",
    "key_prefix: cvg_live_AbC123, api_key_id=key_7 private_key_id=pk1",
    "secret_name=projects/acme/secrets/db_password",
    '{"password": ""}',
    "the cookie banner was dismissed",
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


@pytest.mark.parametrize(
    ("text", "kind", "secret"), PLANTED, ids=[p[1] + str(i) for i, p in enumerate(PLANTED)]
)
def test_it_finds_nothing_left_in_what_it_redacted(text: str, kind: str, secret: str | None) -> None:
    # Stored error texts are redacted, then scanned by audit_genai_safety: the marker is no secret.
    redacted = redact_secrets(text)

    assert find_secrets(redacted) == []
    assert redact_secrets(redacted) == redacted
    assert secret is None or secret not in redacted


# What the credential validators accept, at the edges of each shape (shortest keys, every character
# the alphabet allows), and a line it may turn up in: `{}` is the value. Found by the detector as a whole.
UPPER_DIGITS = string.ascii_uppercase + string.digits
AWS_KEYS = {"access_key_id": AWS_ID, "secret_access_key": AWS_SECRET}
PKCS8 = "-----BEGIN " + "PRIVATE KEY-----\nMIIEvg" + rand(60) + "\n-----END PRIVATE KEY-----"
GCP_KEY_FILE = {
    **SERVICE_ACCOUNT,
    "private_key": PKCS8,
    "token_uri": "https://oauth2.googleapis.com/token",
}
ACCEPTED_CREDENTIALS = [
    (Provider.AWS, AWS_KEYS, "access_key_id", "AssumeRole refused {} in us-east-1", sp.AWS_ACCESS_KEY_ID),
    (
        Provider.AWS,
        {**AWS_KEYS, "access_key_id": "ASIA" + rand(16, UPPER_DIGITS), "session_token": rand(200)},
        "access_key_id",
        "temporary key {} expired",
        sp.AWS_ACCESS_KEY_ID,
    ),
    (
        Provider.AWS,
        {**AWS_KEYS, "secret_access_key": "/+" + rand(38)},
        "secret_access_key",
        "aws_secret_access_key = {}",
        sp.AWS_SECRET_ACCESS_KEY,
    ),
    (Provider.OPENAI, {"api_key": "sk-" + rand(18) + "_-"}, "api_key", "openai: 401 for {}", sp.LLM_API_KEY),
    (Provider.OPENAI, {"api_key": "sk-proj-" + rand(40)}, "api_key", "openai: 401 for {}", sp.LLM_API_KEY),
    (
        Provider.ANTHROPIC,
        {"api_key": "sk-ant-" + rand(20)},
        "api_key",
        "anthropic: {} refused",
        sp.LLM_API_KEY,
    ),
    (Provider.GCP, GCP_KEY_FILE, "private_key", "loaded key:\n{}\nok", sp.PRIVATE_KEY),
]


@pytest.mark.parametrize(
    ("provider", "payload", "field", "line", "kind"),
    ACCEPTED_CREDENTIALS,
    ids=[f"{getattr(row, 'values', row)[4]}-{i}" for i, row in enumerate(ACCEPTED_CREDENTIALS)],
)
def test_it_finds_each_secret_the_credential_validators_accept(
    provider: str, payload: dict[str, str], field: str, line: str, kind: str
) -> None:
    # One shape both ways (secret_shapes): a key we store must be a key the log masking finds.
    credential_validate(provider=provider, payload=payload)
    text = line.replace("{}", payload[field])

    matches = find_secrets(text)

    assert [(m.kind, text[m.start : m.end]) for m in matches] == [(kind, payload[field])]


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
        is_secret_name(n)
        for n in ("password", "db_password", "clientSecret", "api-key", "private_key", "access_token")
    )
    assert not any(is_secret_name(n) for n in ("secret_name", "token_budget", "key_column", "author"))
    assert all(is_sensitive_name(n) for n in ("user_password", "auth_token", "api_key", "credentials"))
    assert not any(is_sensitive_name(n) for n in ("pipeline_logging_id", "author", "status", "metadata"))


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


# --- JSON-like values -----------------------------------------------------------------------------
def test_it_walks_json_to_each_secret_name_and_value_and_masks_a_key_that_is_one() -> None:
    value = {
        "region": "eu",
        "max_tokens": 4096,
        "db": {"dbPassword": "x", "hosts": ["ok.example.com", AWS_ID], "port": 5432},
        "steps": [{"name": "load", "headers": {"Authorization": "Bearer " + rand(24)}}],
        CVG_KEY: 1,
    }

    found = find_secret_paths(value, "run_metadata")

    assert found == [
        SecretPath("run_metadata.db.dbPassword", "dbPassword"),
        SecretPath("run_metadata.db.hosts[1]", "hosts"),
        SecretPath("run_metadata.steps[0].headers.Authorization", "Authorization"),
        SecretPath("run_metadata.[redacted]", "[redacted]"),
    ]
    assert CVG_KEY not in repr(found)
    assert find_secret_paths({"region": "eu", "labels": ["a", "b"], "max_tokens": 1}, "parameters") == []


def test_it_copies_a_value_without_sensitive_keys_bytes_or_secrets_in_texts() -> None:
    redacted = redact_value(
        {
            "name": f"key {CVG_KEY}",
            "api_key_hash": "abc",
            "key_prefix": "cvg_live_AbC123",
            "payload": {"private_key": "x"},
            "nested": [{"client_secret": "s", "scopes": ["tenant:read"]}],
            "blob": b"\x00",
            "source": "postgres://etl:" + rand(10) + "@db/x",
            "count": 3,
        },
        leaf=lambda v: v * 2,
    )

    assert redacted == {
        "name": "key [redacted]",
        "key_prefix": "cvg_live_AbC123",
        "nested": [{"scopes": ["tenant:read"]}],
        "source": "postgres://etl:[redacted]@db/x",
        "count": 6,
    }
