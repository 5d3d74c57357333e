"""The shapes of secrets, written once: the keys we issue and the provider keys tenants give us.

Two kinds of reader use the same shapes. Issuers and validators (`services/api_keys.py`,
`services/admin_tokens.py`, `services/credentials.py`) fullmatch the compiled `*_SHAPE` patterns against
one value; the detectors of `tenants_app.secrets` build their patterns from the same pieces, adding token
boundaries and the cut-short variants a log line may hold. A shape changed here changes both, so what we
accept as a key is always what we find as one (tests/tenants_app/test_secrets.py checks it).

Only `re` is imported: logging loads this while settings load, before any Django app.
"""

from __future__ import annotations

import re
import string

# --- keys we issue ----------------------------------------------------------------------------------
# Tenant API keys are `cvg_{env}_{40 base62}` (env: API_KEY_ENVIRONMENT, `live`, `test`...); admin and
# worker tokens are the same shape with env `admin`. 40 base62 characters carry ~238 random bits.
OUR_KEY_PREFIX = "cvg"
OUR_KEY_ENV = r"[a-z]{2,8}"
OUR_KEY_ALPHABET = "A-Za-z0-9"
# The same alphabet as characters, for the code that draws a key or token from it.
OUR_KEY_CHARACTERS = string.ascii_letters + string.digits
OUR_KEY_RANDOM_LENGTH = 40
OUR_KEY_SHAPE = re.compile(
    rf"{OUR_KEY_PREFIX}_(?P<env>{OUR_KEY_ENV})_(?P<random>[{OUR_KEY_ALPHABET}]{{{OUR_KEY_RANDOM_LENGTH}}})"
)
ADMIN_TOKEN_PREFIX = f"{OUR_KEY_PREFIX}_admin_"
# Webhook signing secrets are the same shape with env `whsec`, so the detectors find them as our keys.
WEBHOOK_SECRET_PREFIX = f"{OUR_KEY_PREFIX}_whsec_"

# --- AWS --------------------------------------------------------------------------------------------
# Access key ids that sign requests: long-term (AKIA) and temporary STS (ASIA), then 16 capitals or digits.
AWS_ACCESS_KEY_ID_PREFIXES = ("AKIA", "ASIA")
# Other AWS unique-id prefixes (groups, users, roles, policies, bearer and context credentials): never a
# stored credential, but worth masking wherever they turn up.
AWS_OTHER_ID_PREFIXES = ("AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA")
AWS_ID_BODY = r"[A-Z0-9]{16}"
AWS_ACCESS_KEY_ID_SHAPE = re.compile(rf"(?:{'|'.join(AWS_ACCESS_KEY_ID_PREFIXES)}){AWS_ID_BODY}")
# The 40-character secret access key, in the base64 alphabet AWS issues it in (never with `=`: 40
# such characters followed by `=` are the middle of a longer base64 text, not a key).
AWS_SECRET_ALPHABET = "A-Za-z0-9/+"  # noqa: S105 - an alphabet, not a secret
AWS_SECRET_LENGTH = 40
AWS_SECRET_ACCESS_KEY_SHAPE = re.compile(rf"[{AWS_SECRET_ALPHABET}]{{{AWS_SECRET_LENGTH}}}")

# --- LLM providers ----------------------------------------------------------------------------------
# OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`): an Anthropic key has an OpenAI key's shape too.
LLM_KEY_ALPHABET = "A-Za-z0-9_-"
OPENAI_KEY_SHAPE = re.compile(rf"sk-[{LLM_KEY_ALPHABET}]{{20,}}")
ANTHROPIC_KEY_SHAPE = re.compile(rf"sk-ant-[{LLM_KEY_ALPHABET}]{{20,}}")


# --- PEM --------------------------------------------------------------------------------------------
def pem_marker(edge: str, label: str = "PRIVATE KEY") -> str:
    """`-----BEGIN PRIVATE KEY-----` and its kin; no regex metacharacter, so also usable in a pattern."""
    return f"-----{edge} {label}-----"


# A GCP key file's `private_key` is PKCS#8: exactly these lines. The detector takes every private-key label
# (`RSA PRIVATE KEY`, `OPENSSH PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`).
PEM_PRIVATE_KEY_BEGIN = pem_marker("BEGIN")
PEM_PRIVATE_KEY_END = pem_marker("END")
PEM_PRIVATE_KEY_LABEL = r"(?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?"
