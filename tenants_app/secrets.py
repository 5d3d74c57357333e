"""What is a secret: the one place that decides it, for names and for values.

Names: `is_secret_name` splits a name into words (camelCase, PascalCase, snake, kebab, SCREAMING, dotted)
and looks for a word or compound of the vocabulary below (`dbPassword`, `tokens`, `connection_strings`,
`x-api-key`); a term followed by a word saying what the value is *about* (`token_count`, `api_key_id`,
`password_changed_at`) names no secret. `is_sensitive_name` adds what is derived from one (`*_hash`,
`encrypted_*`, `payload`): never copied into an audit entry or a log line.

Values: `find_secrets(text)` finds well-formed secrets (our keys and tokens, private-key blocks, cloud and
provider keys, credential headers, JWTs, URL passwords, values of secret-named fields) by kind and span,
never copying them; `find_high_entropy` finds random-looking strings, for where a secret is plausible;
`redact_secrets` masks what `find_secrets` finds. JSON-like values: `find_secret_paths` (why pipeline
parameters and run results are refused) and `redact_value` (what the audit log keeps).

The shapes of keys (ours, AWS, OpenAI, Anthropic, PEM markers) live in `secret_shapes`, where the issuers
and credential validators read them too: the detectors below add only boundaries and cut-short variants.

Pure and fast (compiled regexes, linear scans), no Django import at module level: logging uses it while
settings load, on every record.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tenants_app import secret_shapes as shapes

REDACTED = "[redacted]"

# Kinds of finding. Stable strings: reports, tests and the JSON output use them (names, not secrets: S105).
CONVERGENCE_KEY = "convergence_api_key"
PRIVATE_KEY = "private_key_block"
AWS_ACCESS_KEY_ID = "aws_access_key_id"
AWS_SECRET_ACCESS_KEY = "aws_secret_access_key"  # noqa: S105
GCP_SERVICE_ACCOUNT = "gcp_service_account_json"
GCP_API_KEY = "gcp_api_key"
BEARER_TOKEN = "bearer_token"  # noqa: S105
BASIC_CREDENTIALS = "basic_credentials"
AUTHORIZATION_HEADER = "authorization_header"
CREDENTIAL_HEADER = "credential_header"
JWT = "jwt"
LLM_API_KEY = "llm_api_key"
GITHUB_TOKEN = "github_token"  # noqa: S105
SLACK_TOKEN = "slack_token"  # noqa: S105
AZURE_STORAGE_KEY = "azure_storage_key"
URL_CREDENTIALS = "url_credentials"
HIGH_ENTROPY = "high_entropy_string"
SECRET_NAMED_FIELD = "secret_named_field"  # noqa: S105

# --- names ------------------------------------------------------------------------------------------
# Words of a name: `AWSSecretAccessKey` -> aws secret access key, `x-api-key` -> x api key, `pw2` -> pw 2.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# A word that names a secret by itself, in any position (`password`, `db_password`, `refreshToken`).
_SECRET_WORDS = frozenset(
    {
        "password", "passwords", "passwd", "passwds", "passphrase", "passphrases", "pwd", "pw",
        "secret", "secrets", "token", "tokens", "credential", "credentials", "cred", "creds",
        "auth", "authorization", "bearer", "cookie", "cookies", "dsn", "dsns", "signature", "signatures",
        # the same terms glued into one lowercase word
        "apikey", "apikeys", "privatekey", "accesskey", "secretkey", "sessionid", "connectionstring",
        "connstr", "authtoken", "accesstoken", "refreshtoken", "bearertoken", "sessiontoken", "idtoken",
        "apitoken", "csrftoken",
    }
)  # fmt: skip
# Glued after anything else they still name a secret (`dbpassword`, `xapikey`, `clientsecret`).
_SECRET_WORD_ENDINGS = (
    "password", "passwords", "passwd", "passphrase", "secret", "secrets", "apikey", "apikeys",
    "privatekey", "accesskey", "secretkey",
)  # fmt: skip
# Too common elsewhere to count unless it ends the name: `db_pass`, but `pass_rate`, `pass_count`.
_SECRET_LAST_WORDS = frozenset({"pass"})
# `key` alone is a sort key, a cache key, a dict key: only these kinds of key are secrets.
_SECRET_KEY_KINDS = (
    "api", "access", "private", "secret", "signing", "encryption", "decryption", "master", "hmac", "shared",
    "account", "storage", "client", "app", "auth", "session", "subscription", "license", "service", "admin",
    "root", "ssh", "gpg", "pgp", "deploy", "webhook", "jwt", "sas",
)  # fmt: skip
_SECRET_COMPOUNDS: frozenset[tuple[str, ...]] = frozenset(
    {(kind, key) for kind in _SECRET_KEY_KINDS for key in ("key", "keys")}
    # The AWS access key id is half of the credential, not an id of it.
    | {("access", "key", "id"), ("access", "key", "ids")}
    | {(conn, text) for conn in ("connection", "conn") for text in ("string", "strings", "str")}
    # A web session's id is the bearer credential of that session.
    | {("session", "id"), ("session", "ids"), ("session", "key"), ("session", "cookie")}
)
_LONGEST_COMPOUND = max(len(compound) for compound in _SECRET_COMPOUNDS)
# `max_tokens`, `prompt_tokens`, `tokens_per_minute`: LLM token counts, not credentials.
_TOKEN_COUNTERS = frozenset(
    {"max", "min", "total", "num", "n", "prompt", "completion", "input", "output", "cached", "reasoning",
     "context", "remaining", "used", "count", "budget"}
)  # fmt: skip
# A word after a secret term that makes the name about the secret rather than the secret itself: what
# identifies or references it, where it is kept, what kind, how many or how long, when.
_ABOUT_WORDS = frozenset(
    {
        "id", "ids", "name", "names", "prefix", "suffix", "label", "alias", "hint", "ref", "refs",
        "reference", "arn", "fingerprint", "fingerprints", "version", "versions",
        "path", "paths", "file", "files", "filename", "dir", "url", "urls", "uri", "endpoint", "host",
        "domain", "location", "store", "manager", "vault", "provider", "field", "column",
        "type", "types", "kind", "format", "encoding", "scheme", "method", "mode", "algorithm", "alg",
        "policy", "strength", "scope", "scopes", "source", "status", "state",
        "count", "counts", "length", "len", "size", "limit", "limits", "max", "min", "budget", "rate",
        "total", "number", "num", "index", "usage", "copies", "per", "in", "out",
        "at", "time", "date", "timestamp", "expires", "expiry", "expiration", "ttl", "lifetime", "age",
        "seconds", "minutes", "hours", "days", "ms", "timeout", "interval",
        "valid", "validity", "check", "checks", "error", "errors", "message", "rotation", "reset",
        "secure", "samesite", "httponly", "user", "username", "login", "email", "owner",
    }
)  # fmt: skip
# Past participles say what happened to it (`password_changed`, `api_keys_revoked`, `tokens_used`),
# except those that still hold it in another form (and `seed`, which is no participle).
_STILL_SECRET_ED_WORDS = frozenset({"encrypted", "hashed", "encoded", "salted", "signed", "wrapped", "seed"})
# A first word that makes the name a yes/no question (`has_password`, `use_auth`, `require_token`).
_PREDICATE_WORDS = frozenset(
    {"is", "has", "have", "use", "uses", "require", "requires", "need", "needs", "enable", "disable",
     "allow", "no", "skip", "should"}
)  # fmt: skip
# Derived from a secret, or a container of one: kept out of audit entries and log lines too.
_DERIVED_WORDS = frozenset({"encrypted", "ciphertext", "cipher", "plaintext", "payload", "payloads"})
_DERIVED_LAST_WORDS = frozenset({"hash", "hashes"})

# Word stems of column and field names where a random-looking value is suspicious: keys, tokens,
# configuration and parameters, and free text a person or a program may paste anything into. Matched at
# the start of each word, so `monkey` or `context` do not count.
_SUSPICIOUS_STEMS: tuple[str, ...] = (
    "key", "apikey", "token", "secret", "auth", "pass", "pwd", "cred", "config", "conf", "param", "setting",
    "option", "env", "header", "cookie", "session", "signature", "sig", "cert", "conn", "dsn", "url", "uri",
    "error", "err", "exception", "message", "msg", "log", "detail", "description", "note", "comment", "text",
    "meta", "payload", "body", "query", "command", "cmd", "args", "kwargs", "arguments", "expectation",
    "response", "request", "output", "stdout", "stderr", "trace",
)  # fmt: skip
# Names ending so hold ids, counts or timestamps, whatever comes before (`pipeline_logging_id`).
_PLAIN_NAME_ENDINGS: frozenset[str] = frozenset({"id", "ids", "at", "time", "date", "count", "ms", "index"})


def name_words(name: str) -> tuple[str, ...]:
    """The lowercase words of a name, whatever its case style: `dbPassword` -> ("db", "password")."""
    return tuple(word.lower() for word in _WORD.findall(name))


def is_secret_name(name: str) -> bool:
    """Whether a field, column, parameter or header name says its value is a secret."""
    words = name_words(name)
    if not words or words[0] in _PREDICATE_WORDS:
        return False
    return any(_names_the_secret(words, end) for end in _secret_term_ends(words))


def is_sensitive_name(name: str) -> bool:
    """A secret name, or one of something derived from a secret (`key_hash`, `encrypted_response`).

    What the audit log drops, the logs mask and the GenAI-safety scan reports as a column.
    """
    if is_secret_name(name):
        return True
    words = name_words(name)
    return bool(words) and (
        words == ("key",) or words[-1] in _DERIVED_LAST_WORDS or not _DERIVED_WORDS.isdisjoint(words)
    )


def is_suspicious_name(name: str) -> bool:
    """Whether a column or field name makes a random-looking value suspicious (keys, config, free text)."""
    if is_plain_name(name):
        return False
    return any(word.startswith(_SUSPICIOUS_STEMS) for word in name_words(name))


def is_plain_name(name: str) -> bool:
    """Whether a name says its value is an id, a count or a time (`job_id`, `created_at`), not free text."""
    words = name_words(name)
    return bool(words) and words[-1] in _PLAIN_NAME_ENDINGS


def _secret_term_ends(words: tuple[str, ...]) -> Iterator[int]:
    """The index just past each secret word or compound in `words` (the longest compound at a place)."""
    for start, word in enumerate(words):
        for length in range(min(_LONGEST_COMPOUND, len(words) - start), 1, -1):
            if words[start : start + length] in _SECRET_COMPOUNDS:
                yield start + length
                break
        else:
            if word in _SECRET_WORDS or (len(word) > 6 and word.endswith(_SECRET_WORD_ENDINGS)):
                if not (word in ("token", "tokens") and start > 0 and words[start - 1] in _TOKEN_COUNTERS):
                    yield start + 1
            elif word in _SECRET_LAST_WORDS and start == len(words) - 1:
                yield start + 1


def _names_the_secret(words: tuple[str, ...], end: int) -> bool:
    if end == len(words):
        return True
    after = words[end]
    if after in _ABOUT_WORDS:
        return False
    return not (after.endswith("ed") and after not in _STILL_SECRET_ED_WORDS)


# --- values -----------------------------------------------------------------------------------------
# Token boundaries: a key glued into a longer token of the same alphabet is a different string.
_B = r"(?<![A-Za-z0-9_])"
_E = r"(?![A-Za-z0-9_])"
# The shapes of keys, with the boundaries and cut-short variants a text needs. Our keys cut short to 12
# random characters still narrow a search a lot; the display prefix (6 of them) is no secret.
_OUR_KEY = rf"{shapes.OUR_KEY_PREFIX}_{shapes.OUR_KEY_ENV}_[{shapes.OUR_KEY_ALPHABET}]{{12,}}"
_PEM_BEGIN = shapes.pem_marker("BEGIN", shapes.PEM_PRIVATE_KEY_LABEL)
_PEM_END = shapes.pem_marker("END", shapes.PEM_PRIVATE_KEY_LABEL)
_AWS_ID_PREFIXES = shapes.AWS_ACCESS_KEY_ID_PREFIXES + shapes.AWS_OTHER_ID_PREFIXES
_AWS_ID = rf"(?<![A-Z0-9])(?:{'|'.join(_AWS_ID_PREFIXES)}){shapes.AWS_ID_BODY}(?![A-Z0-9])"
_AWS_ALPHABET = shapes.AWS_SECRET_ALPHABET
_AWS_SECRET = (
    rf"(?<![{_AWS_ALPHABET}])(?P<value>[{_AWS_ALPHABET}]{{{shapes.AWS_SECRET_LENGTH}}})(?![{_AWS_ALPHABET}=])"
)
# The Anthropic shape is an OpenAI one too; both are named so that neither can drift from the detector.
_LLM_KEY = (
    rf"(?<![{shapes.LLM_KEY_ALPHABET}])"
    rf"(?:{shapes.ANTHROPIC_KEY_SHAPE.pattern}|{shapes.OPENAI_KEY_SHAPE.pattern})"
)
# Lowercase pieces every sensitive name contains (checked by a test against the vocabulary above).
NAME_NEEDLES: tuple[str, ...] = (
    "pass", "pw", "secret", "token", "cred", "auth", "bearer", "cookie", "dsn", "signature", "key",
    "session", "conn", "payload", "plaintext", "cipher", "encrypted", "hash",
)  # fmt: skip


@dataclass(frozen=True)
class _Detector:
    """A pattern of one kind of secret. It runs only on text holding one of its needles (lowercase),
    which keeps ordinary text at a few microseconds. A `value` or `bare` group, when it took part, is
    the secret (`Authorization: [redacted]`, `postgres://app:[redacted]@db`); `accept` vetoes a match."""

    kind: str
    pattern: re.Pattern[str]
    reason: str  # a fixed description, never text from the input
    needles: tuple[str, ...]
    accept: Callable[[re.Match[str]], bool] | None = None


def _decodes_to_user_and_password(match: re.Match[str]) -> bool:
    """`Basic` credentials are base64 of `user:password`: not `basic validation` or `basic settings`."""
    try:
        decoded = base64.b64decode(match.group("value"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


def _names_a_sensitive_field(match: re.Match[str]) -> bool:
    value = match.group("value") if match.group("value") is not None else match.group("bare")
    return bool(value) and is_sensitive_name(match.group("name"))


# Earlier detectors win where findings overlap (the more specific kind is reported).
_DETECTORS: tuple[_Detector, ...] = (
    # `cvg_{env}_{40 base62}` (tenant keys, api_keys.py) and `cvg_admin_{40}` (admin and worker tokens,
    # admin_tokens.py), also cut short.
    _Detector(
        CONVERGENCE_KEY,
        re.compile(_OUR_KEY),
        "Convergence API key or admin token (cvg_ prefix)",
        (f"{shapes.OUR_KEY_PREFIX}_",),
    ),
    # Before the private-key block it contains: the whole key file is the finding.
    _Detector(
        GCP_SERVICE_ACCOUNT,
        re.compile(
            r"[\"']type[\"']\s*:\s*[\"']service_account[\"'](?=[\s\S]{0,8000}[\"']private_key(?:_id)?[\"']\s*:)"
            r"|[\"']private_key(?:_id)?[\"']\s*:(?=[\s\S]{0,8000}[\"']type[\"']\s*:\s*[\"']service_account[\"'])"
        ),
        "GCP service-account key JSON (type service_account with private_key)",
        ("service_account",),
    ),
    # The whole block, body included, up to its END line (or the end of a text cut short, escaped
    # newlines included): the body is the secret, so redaction must not stop at the header.
    _Detector(
        PRIVATE_KEY,
        re.compile(rf"{_PEM_BEGIN}(?:[\s\S]*?{_PEM_END}|[A-Za-z0-9+/=:\s\\-]*)"),
        "PEM/OpenSSH/PGP private-key block",
        ("private key",),
    ),
    _Detector(
        AWS_ACCESS_KEY_ID,
        re.compile(_AWS_ID),
        "AWS access key id",
        tuple(prefix.lower() for prefix in _AWS_ID_PREFIXES),
    ),
    # 40 base64 characters alone may be a hash or an id: trusted only next to the key's name.
    _Detector(
        AWS_SECRET_ACCESS_KEY,
        re.compile(
            r"(?i:aws)?_?(?i:secret)_?(?i:access)?_?(?i:key)(?:_id)?[\"']?\s*[:=]\s*[\"']?" + _AWS_SECRET
        ),
        "AWS secret access key next to its name",
        ("secret",),
    ),
    _Detector(
        GCP_API_KEY,
        re.compile(rf"{_B}AIza[0-9A-Za-z_-]{{35}}(?![0-9A-Za-z_-])"),
        "Google API key (AIza prefix)",
        ("aiza",),
    ),
    # A scheme and its credentials, or one long raw token; not `Authorization: failed for user`.
    _Detector(
        AUTHORIZATION_HEADER,
        re.compile(
            r"(?<![A-Za-z0-9])(?i:(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?(?P<value>"
            r"(?i:basic|bearer|token|digest|negotiate|aws4-hmac-sha256)\s+[A-Za-z0-9._~+/=,:-]{8,}"
            r"|[A-Za-z0-9._~+/=-]{16,})"
        ),
        "Authorization header with credentials",
        ("authorization",),
    ),
    # Every cookie of the header (`;` goes on), and API key headers.
    _Detector(
        CREDENTIAL_HEADER,
        re.compile(
            r"(?<![A-Za-z0-9])(?i:(?:set-)?cookie)[\"']?\s*[:=]\s*[\"']?(?P<value>[^\"'\r\n,}\\]{8,})"
            r"|(?<![A-Za-z0-9])(?i:x-api-key|x-auth-token|x-goog-api-key)[\"']?\s*[:=]\s*[\"']?"
            r"(?P<bare>[^\s\"',;}\\]{8,})"
        ),
        "Cookie or API key header",
        ("cookie", "x-api-key", "x-auth-token", "x-goog-api-key"),
    ),
    _Detector(
        BEARER_TOKEN,
        re.compile(r"(?<![A-Za-z0-9])(?i:bearer)\s+(?P<value>[A-Za-z0-9._~+/-]{16,}=*)"),
        "bearer token",
        ("bearer",),
    ),
    _Detector(
        BASIC_CREDENTIALS,
        re.compile(r"(?<![A-Za-z0-9])(?i:basic)\s+(?P<value>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"),
        "Basic credentials (base64 of user:password)",
        ("basic",),
        _decodes_to_user_and_password,
    ),
    _Detector(
        JWT,
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        "JSON Web Token",
        ("eyj",),
    ),
    # OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`) keys: both are providers tenants configure.
    _Detector(
        LLM_API_KEY,
        re.compile(_LLM_KEY),
        "OpenAI or Anthropic API key (sk- prefix)",
        ("sk-",),
    ),
    _Detector(
        GITHUB_TOKEN,
        re.compile(rf"{_B}(?:gh[pousr]_[A-Za-z0-9]{{36,}}|github_pat_[A-Za-z0-9_]{{22,}}){_E}"),
        "GitHub token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _Detector(
        SLACK_TOKEN, re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"), "Slack token", ("xox",)
    ),
    _Detector(
        AZURE_STORAGE_KEY,
        re.compile(r"(?i:AccountKey|SharedAccessKey)\s*=\s*(?P<value>[A-Za-z0-9/+]{30,}={0,2})"),
        "Azure storage or service-bus key",
        ("accountkey", "sharedaccesskey"),
    ),
    # scheme://user:password@host. Not `user@host` (no password) and not `:@` (empty password).
    _Detector(
        URL_CREDENTIALS,
        re.compile(
            r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s/:@\"'<>]{1,100}:(?P<value>[^\s/@\"'<>]{1,200})@(?=[A-Za-z0-9.-])"
        ),
        "password inside a URL",
        ("://",),
    ),
    # `name: "value"`, `name = 'value'` (JSON, reprs) or `name=value` (query strings, keyword arguments)
    # whose name is sensitive; not `name: value`, which is free text ("cryptoKeys/tenant-secrets:encrypt").
    # The name starts after a non-name character, so the scan stays linear in the line's length.
    _Detector(
        SECRET_NAMED_FIELD,
        re.compile(
            r"(?<![A-Za-z0-9_-])(?P<name>[A-Za-z][A-Za-z0-9_-]*)"
            r"(?:\\?[\"']?\s*[:=]\s*(?P<quote>\\?[\"'])(?P<value>.*?)(?P=quote)|=(?P<bare>[^\s&\"',;})\]\\]+))"
        ),
        "value of a field named like a secret",
        NAME_NEEDLES,
        _names_a_sensitive_field,
    ),
)
_NEEDLES: tuple[str, ...] = tuple(sorted({n for d in _DETECTORS for n in d.needles}))
# What redaction left (`password=[redacted]`, `Cookie: [redacted]`) is no secret: a text masked once
# and scanned again (an error stored in a tenant dataset, then audited) has nothing left to find.
_ALREADY_MASKED = re.compile(r"(?:[\s;,]*\[redacted\]?)+[\s;,]*")

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
_FINGERPRINT_SALT = "tenants_app.secret_patterns.fingerprint"  # unchanged: reviewed fingerprints stay valid


@dataclass(frozen=True)
class SecretMatch:
    """One secret found in a text: its kind and where it is (`text[start:end]`), never a copy of it."""

    kind: str
    start: int
    end: int
    reason: str


def find_secrets(text: str) -> list[SecretMatch]:
    """Every well-formed secret in `text`, in order, without overlaps (the earlier detector wins)."""
    found: list[SecretMatch] = []
    for match in _all_matches(text):
        if not any(match.start < other.end and other.start < match.end for other in found):
            found.append(match)
    return sorted(found, key=lambda m: m.start)


def redact_secrets(text: str, replacement: str = REDACTED) -> str:
    """`text` with everything `find_secrets` finds replaced, overlapping findings masked as one."""
    spans = sorted((m.start, m.end) for m in _all_matches(text))
    if not spans:
        return text
    parts, position = [], 0
    for start, end in spans:
        if end <= position:
            continue  # inside what is already masked
        if start >= position:
            parts.append(text[position:start])
            parts.append(replacement)
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _all_matches(text: str) -> Iterator[SecretMatch]:
    if not text:
        return
    lowered = text.lower()
    present = {needle for needle in _NEEDLES if needle in lowered}
    if not present:
        return
    for detector in _DETECTORS:
        if present.isdisjoint(detector.needles):
            continue
        for match in detector.pattern.finditer(text):
            if detector.accept is not None and not detector.accept(match):
                continue
            start, end = _secret_span(match)
            if _ALREADY_MASKED.fullmatch(text, start, end):
                continue
            if detector.kind == GCP_SERVICE_ACCOUNT:
                start, end = _service_account_span(text, start)
            yield SecretMatch(kind=detector.kind, start=start, end=end, reason=detector.reason)


def _secret_span(match: re.Match[str]) -> tuple[int, int]:
    for group in ("value", "bare"):
        if group in match.re.groupindex and match.start(group) != -1:
            return match.span(group)
    return match.span()


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
    classes = [_char_class(c) for c in token]
    if not {0, 1, 2} <= set(classes):
        return False
    threshold = ENTROPY_THRESHOLD_SHORT if len(token) < 32 else ENTROPY_THRESHOLD
    if shannon_entropy(token) < threshold:
        return False
    changes = sum(1 for a, b in itertools.pairwise(classes) if a != b)
    return changes / (len(token) - 1) >= MIN_CLASS_CHANGE_RATIO


def shannon_entropy(text: str) -> float:
    """Shannon entropy of `text` in bits per character."""
    if not text:
        return 0.0
    length = len(text)
    return -sum(count / length * math.log2(count / length) for count in Counter(text).values())


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


# --- JSON-like values -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretPath:
    """Where a JSON-like value names or holds a secret: its path and the nearest key, both shown masked."""

    path: str  # `run_metadata.connection.db_password`, `parameters.hosts[1]`
    key: str  # `db_password`, `hosts`; the top-level name for a value that is itself a secret


def find_secret_paths(value: Any, name: str) -> list[SecretPath]:
    """Each key naming a secret (not walked into) and each text holding one, in document order.

    A key that holds a secret itself is reported masked, so the answer can be shown to the sender.
    Walks without recursion: callers bound the depth for their own error message, not for safety.
    """
    found: list[SecretPath] = []
    # (path, nearest key, value, whether the key names or is a secret), popped in document order
    pending: list[tuple[str, str, Any, bool]] = [(name, name, value, False)]
    while pending:
        path, key, item, named = pending.pop()
        if named:
            found.append(SecretPath(path, key))
        elif isinstance(item, Mapping):
            children = []
            for raw_key, child in item.items():
                label = redact_secrets(str(raw_key))
                secret = label != str(raw_key) or is_secret_name(label)
                children.append((f"{path}.{label}", label, child, secret))
            pending.extend(reversed(children))
        elif isinstance(item, list | tuple):
            children = [(f"{path}[{index}]", key, child, False) for index, child in enumerate(item)]
            pending.extend(reversed(children))
        elif isinstance(item, str) and find_secrets(item):
            found.append(SecretPath(path, key))
    return found


_BYTES = (bytes, bytearray, memoryview)


def redact_value(value: Any, *, leaf: Callable[[Any], Any] | None = None) -> Any:
    """A copy without secrets: sensitive-named keys and opaque bytes dropped, secrets in texts masked.

    `leaf` converts the other scalars (dates, decimals) for the caller's format.
    """
    if isinstance(value, Mapping):
        return {
            redact_secrets(str(key)): redact_value(item, leaf=leaf)
            for key, item in value.items()
            if not is_sensitive_name(str(key)) and not isinstance(item, _BYTES)
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, leaf=leaf) for item in value]
    if isinstance(value, _BYTES):
        return REDACTED
    if isinstance(value, str):
        return redact_secrets(value)
    return value if leaf is None else leaf(value)


# --- helpers ----------------------------------------------------------------------------------------
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


def _char_class(char: str) -> int:
    """0 upper case, 1 lower case, 2 digit, 3 anything else."""
    return 0 if char.isupper() else 1 if char.islower() else 2 if char.isdigit() else 3
