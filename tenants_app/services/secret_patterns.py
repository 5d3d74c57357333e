"""Detectors for secrets in free text: what they found (kind and span), never the secret itself.

`find_secrets(text)` finds well-formed secrets anywhere (our own keys and tokens, private-key blocks, cloud
keys, bearer tokens, JWTs, credentials in URLs). `find_high_entropy(text)` finds random-looking strings; it
is noisier, so callers use it only where a secret is plausible (columns or fields named like keys, tokens,
configuration or free text). `redact_secrets(text)` replaces what `find_secrets` finds, for log lines.
Everything here is pure and fast (compiled regexes, linear scans), so it can run on every log record.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Kinds of finding. Stable strings: reports, tests and the JSON output use them (names, not secrets: S105).
CONVERGENCE_KEY = "convergence_api_key"
PRIVATE_KEY = "private_key_block"
AWS_ACCESS_KEY_ID = "aws_access_key_id"
AWS_SECRET_ACCESS_KEY = "aws_secret_access_key"  # noqa: S105
GCP_SERVICE_ACCOUNT = "gcp_service_account_json"
GCP_API_KEY = "gcp_api_key"
BEARER_TOKEN = "bearer_token"  # noqa: S105
AUTHORIZATION_HEADER = "authorization_header"
JWT = "jwt"
LLM_API_KEY = "llm_api_key"
GITHUB_TOKEN = "github_token"  # noqa: S105
SLACK_TOKEN = "slack_token"  # noqa: S105
AZURE_STORAGE_KEY = "azure_storage_key"
URL_CREDENTIALS = "url_credentials"
HIGH_ENTROPY = "high_entropy_string"
SECRET_NAMED_FIELD = "secret_named_field"  # noqa: S105

# Token boundaries: a key glued into a longer token of the same alphabet is a different string.
_B = r"(?<![A-Za-z0-9_])"
_E = r"(?![A-Za-z0-9_])"

# (kind, pattern, reason, needles). The reason is a fixed description of the pattern, never text from the
# input. A pattern runs only on text that contains one of its needles (lowercase), which keeps ordinary
# text at a few microseconds: most patterns start with a lookbehind that is tried at every position.
# A pattern with a `value` group reports only that group, so a redacted log line keeps its context
# (`Authorization: Bearer [redacted]`, `postgres://app:[redacted]@db`). Earlier patterns win overlaps.
_PATTERNS: tuple[tuple[str, re.Pattern[str], str, tuple[str, ...]], ...] = (
    (
        # `cvg_{env}_{40 base62}` (tenant keys, see api_keys.py) and `cvg_admin_{40}` (admin and worker
        # tokens). 20+ random characters: a truncated key still narrows the search a lot; the 6-character
        # display prefix (`key_prefix`) is not a secret and does not match.
        CONVERGENCE_KEY,
        re.compile(rf"{_B}cvg_[a-z]{{2,8}}_[A-Za-z0-9]{{20,}}{_E}"),
        "Convergence API key or admin token (cvg_ prefix)",
        ("cvg_",),
    ),
    (
        # Before the private-key block it contains: the whole key file is the finding.
        GCP_SERVICE_ACCOUNT,
        re.compile(
            r"[\"']type[\"']\s*:\s*[\"']service_account[\"'](?=[\s\S]{0,8000}[\"']private_key(?:_id)?[\"']\s*:)"
            r"|[\"']private_key(?:_id)?[\"']\s*:(?=[\s\S]{0,8000}[\"']type[\"']\s*:\s*[\"']service_account[\"'])"
        ),
        "GCP service-account key JSON (type service_account with private_key)",
        ("service_account",),
    ),
    (
        PRIVATE_KEY,
        # The whole block, body included, up to its END line (or the end of a text cut short): the
        # body is the secret, so redaction must not stop at the header.
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=:\s\\-]*)"
        ),
        "PEM/OpenSSH/PGP private-key block",
        ("private key",),
    ),
    (
        AWS_ACCESS_KEY_ID,
        re.compile(
            r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"
        ),
        "AWS access key id",
        ("akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "abia", "acca"),
    ),
    (
        # A secret access key is 40 base64 characters: only trusted next to its name, since 40 such
        # characters alone may be a hash or an id (the entropy check covers suspicious fields).
        AWS_SECRET_ACCESS_KEY,
        re.compile(
            r"(?i:aws)?_?(?i:secret)_?(?i:access)?_?(?i:key)(?:_id)?[\"']?\s*[:=]\s*[\"']?"
            r"(?<![A-Za-z0-9/+])(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        "AWS secret access key next to its name",
        ("secret",),
    ),
    (
        GCP_API_KEY,
        re.compile(rf"{_B}AIza[0-9A-Za-z_-]{{35}}(?![0-9A-Za-z_-])"),
        "Google API key (AIza prefix)",
        ("aiza",),
    ),
    (
        AUTHORIZATION_HEADER,
        re.compile(
            r"(?i:(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?"
            r"(?P<value>(?i:basic|bearer|token|digest|aws4-hmac-sha256)\s+[A-Za-z0-9._~+/=,:-]{8,})"
        ),
        "Authorization header with credentials",
        ("authorization",),
    ),
    (
        BEARER_TOKEN,
        re.compile(r"(?<![A-Za-z0-9])(?i:bearer)\s+(?P<value>[A-Za-z0-9._~+/-]{16,}=*)"),
        "bearer token",
        ("bearer",),
    ),
    (
        JWT,
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        "JSON Web Token",
        ("eyj",),
    ),
    (
        # OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`) keys: both are providers tenants configure.
        LLM_API_KEY,
        re.compile(r"(?<![A-Za-z0-9_-])sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),
        "OpenAI or Anthropic API key (sk- prefix)",
        ("sk-",),
    ),
    (
        GITHUB_TOKEN,
        re.compile(rf"{_B}(?:gh[pousr]_[A-Za-z0-9]{{36,}}|github_pat_[A-Za-z0-9_]{{22,}}){_E}"),
        "GitHub token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    (SLACK_TOKEN, re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"), "Slack token", ("xox",)),
    (
        AZURE_STORAGE_KEY,
        re.compile(r"(?i:AccountKey|SharedAccessKey)\s*=\s*(?P<value>[A-Za-z0-9/+]{30,}={0,2})"),
        "Azure storage or service-bus key",
        ("accountkey", "sharedaccesskey"),
    ),
    (
        # scheme://user:password@host. Not `user@host` (no password) and not `:@` (empty password).
        URL_CREDENTIALS,
        re.compile(
            r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s/:@\"'<>]{1,100}:(?P<value>[^\s/@\"'<>]{1,200})@(?=[A-Za-z0-9.-])"
        ),
        "password inside a URL",
        ("://",),
    ),
)

_FINGERPRINT_SALT = "tenants_app.secret_patterns.fingerprint"

# Substring tests are C loops: ordinary log lines and messages, which hold none, stop there.
_NEEDLES: tuple[str, ...] = tuple(sorted({n for *_, needles in _PATTERNS for n in needles}))

# Candidates for the entropy check: runs of the alphabets of keys, tokens and base64.
_ENTROPY_CANDIDATE = re.compile(r"[A-Za-z0-9+/_=-]{16,}")
MIN_ENTROPY_LENGTH = 20
# Bits per character, measured on random base62 strings: 20 characters average 4.0 (1st percentile 3.65),
# 32 average 4.5 (1st percentile 4.2), 40 average 4.8. Below these a string repeats itself too much.
ENTROPY_THRESHOLD_SHORT = 3.5
ENTROPY_THRESHOLD = 4.0
# Share of neighbouring characters of different classes (upper, lower, digit, other): ~0.62 for random
# base62 (standard deviation 0.11 at 20 characters), under 0.35 for words, CamelCase and paths.
MIN_CLASS_CHANGE_RATIO = 0.4

# Field and column names that say "this holds a secret". Matched on snake_case words, so
# `secret_name` (a reference) and `token_budget` (a number) are not secrets, but `db_password` is.
_SECRET_FIELD_NAME = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|pwd|secret|client_secret|secret_key|secret_access_key|"
    r"private_key|private_key_id|api_key|apikey|access_key|access_token|refresh_token|auth_token|"
    r"id_token|session_token|bearer_token|token|authorization|credentials?|plaintext|"
    r"connection_string)$",
    re.IGNORECASE,
)
# Column names that look like secrets anywhere in the name (a schema check: stricter than for fields).
_SECRET_COLUMN_NAME = re.compile(
    r"pass(?:word|wd|phrase)|secret|token|api_?key|private_?key|access_?key|credential|"
    r"(?:^|_)auth(?:orization)?(?:$|_)|(?:^|_)pwd(?:$|_)|plaintext|cipher|encrypted",
    re.IGNORECASE,
)
# Names of columns and fields where a random-looking value is suspicious: keys, tokens, configuration,
# parameters, and free text a person or program may paste anything into.
# Word stems of column and field names where a random-looking value is suspicious: keys, tokens,
# configuration and parameters, and free text a person or a program may paste anything into. Matched at
# the start of each snake_case or camelCase word, so `monkey` or `context` do not count.
_SUSPICIOUS_STEMS: tuple[str, ...] = (
    "key", "apikey", "token", "secret", "auth", "pass", "pwd", "cred", "config", "conf", "param", "setting",
    "option", "env", "header", "cookie", "session", "signature", "sig", "cert", "conn", "dsn", "url", "uri",
    "error", "err", "exception", "message", "msg", "log", "detail", "description", "note", "comment", "text",
    "meta", "payload", "body", "query", "command", "cmd", "args", "kwargs", "arguments", "expectation",
    "response", "request", "output", "stdout", "stderr", "trace",
)  # fmt: skip
# Names ending so hold ids, counts or timestamps, whatever comes before (`pipeline_logging_id`).
_PLAIN_NAME_ENDINGS: frozenset[str] = frozenset({"id", "ids", "at", "time", "date", "count", "ms", "index"})


@dataclass(frozen=True)
class SecretMatch:
    """One secret found in a text: its kind and where it is (`text[start:end]`), never a copy of it."""

    kind: str
    start: int
    end: int
    reason: str


def find_secrets(text: str) -> list[SecretMatch]:
    """Every well-formed secret in `text`, in order, without overlaps (the earlier pattern wins)."""
    if not text:
        return []
    lowered = text.lower()
    present = {needle for needle in _NEEDLES if needle in lowered}
    if not present:
        return []
    found: list[SecretMatch] = []
    for kind, pattern, reason, needles in _PATTERNS:
        if present.isdisjoint(needles):
            continue
        for match in pattern.finditer(text):
            start, end = match.span("value") if "value" in pattern.groupindex else match.span()
            if kind == GCP_SERVICE_ACCOUNT:
                start, end = _service_account_span(text, start)
            if not any(start < other.end and other.start < end for other in found):
                found.append(SecretMatch(kind=kind, start=start, end=end, reason=reason))
    return sorted(found, key=lambda m: m.start)


def find_high_entropy(text: str, *, min_length: int = MIN_ENTROPY_LENGTH) -> list[SecretMatch]:
    """Random-looking tokens: `min_length`+ characters mixing cases and digits, with high entropy."""
    if not text or len(text) < min_length:
        return []
    found = []
    for match in _ENTROPY_CANDIDATE.finditer(text):
        token = match.group()
        if len(token) >= min_length and looks_random(token):
            found.append(
                SecretMatch(
                    kind=HIGH_ENTROPY,
                    start=match.start(),
                    end=match.end(),
                    reason=f"random-looking string of {len(token)} characters",
                )
            )
    return found


def looks_random(token: str) -> bool:
    """Upper case, lower case and digits, high entropy, and character classes that change often.

    Each rule keeps a family of legitimate values out: hex digests, uuids and our lowercase ids have no
    upper case; words, CamelCase names and paths change class rarely (a random base62 string changes
    on ~62% of characters); short repetitive strings have low entropy.
    """
    if not _mixed_classes(token):
        return False
    threshold = ENTROPY_THRESHOLD_SHORT if len(token) < 32 else ENTROPY_THRESHOLD
    if shannon_entropy(token) < threshold:
        return False
    classes = [_char_class(c) for c in token]
    changes = sum(1 for a, b in itertools.pairwise(classes) if a != b)
    return changes / (len(token) - 1) >= MIN_CLASS_CHANGE_RATIO


def redact_secrets(text: str, replacement: str = "[redacted]") -> str:
    """`text` with everything `find_secrets` finds replaced (for log lines and error messages)."""
    matches = find_secrets(text)
    if not matches:
        return text
    parts, position = [], 0
    for match in matches:
        parts.append(text[position : match.start])
        parts.append(replacement)
        position = match.end
    parts.append(text[position:])
    return "".join(parts)


def shannon_entropy(text: str) -> float:
    """Shannon entropy of `text` in bits per character."""
    if not text:
        return 0.0
    length = len(text)
    return -sum(count / length * math.log2(count / length) for count in Counter(text).values())


def is_secret_field_name(name: str) -> bool:
    """Whether a JSON field or parameter name says it holds a secret (`db_password`, `api_key`)."""
    return bool(_SECRET_FIELD_NAME.search(_snake(name)))


def is_secret_column_name(name: str) -> bool:
    """Whether a column name looks like it was made to hold a secret (`password`, `auth_token`)."""
    return bool(_SECRET_COLUMN_NAME.search(name))


def is_suspicious_name(name: str) -> bool:
    """Whether a column or field name makes a random-looking value suspicious (keys, config, free text)."""
    if is_plain_name(name):
        return False
    return any(word.startswith(_SUSPICIOUS_STEMS) for word in _snake(name).split("_"))


def is_plain_name(name: str) -> bool:
    """Whether a name says its value is an id, a count or a time (`job_id`, `created_at`), not free text."""
    return _snake(name).rsplit("_", 1)[-1] in _PLAIN_NAME_ENDINGS


def is_service_account_info(value: Mapping[str, Any]) -> bool:
    """Whether a parsed JSON object is a GCP service-account key (`type` service_account, a `private_key`)."""
    return value.get("type") == "service_account" and bool(value.get("private_key"))


def fingerprint(value: str) -> str:
    """8 hex of an HMAC keyed with SECRET_KEY: tells findings of the same secret apart, reveals nothing.

    Keyed, not a plain hash: 32 bits of sha256 would let a reader of a report confirm a guessed weak
    password offline. The same value gives the same fingerprint across runs of one deployment.
    """
    from django.utils.crypto import salted_hmac

    digest = salted_hmac(_FINGERPRINT_SALT, value.encode("utf-8", "surrogatepass"), algorithm="sha256")
    return digest.hexdigest()[:8]


def _service_account_span(text: str, start: int) -> tuple[int, int]:
    """The JSON object around a service-account match, or a bounded window when it is not balanced."""
    opening = text.rfind("{", 0, start)
    origin = opening if opening != -1 else start
    depth = 0
    for index in range(origin, min(len(text), origin + 16_000)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return origin, index + 1
    return origin, min(len(text), start + 16_000)


def _mixed_classes(token: str) -> bool:
    return (
        any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and any(c.isdigit() for c in token)
    )


def _char_class(char: str) -> int:
    if char.isupper():
        return 0
    if char.islower():
        return 1
    if char.isdigit():
        return 2
    return 3


def _snake(name: str) -> str:
    """`clientSecret` and `client-secret` -> `client_secret`, so one pattern covers the spellings."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
