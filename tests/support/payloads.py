"""Cloud-credential payloads for tests: fresh random secrets each call, so a leak check finds only its own."""

from __future__ import annotations

import base64
import os
import secrets

AWS_KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def gcp_payload() -> dict[str, str]:
    """A service-account key file as Google issues it, with a random private key."""
    body = base64.b64encode(os.urandom(600)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return {
        "type": "service_account",
        "project_id": "acme-analytics",
        "private_key_id": secrets.token_hex(20),
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{lines}\n-----END PRIVATE KEY-----\n",
        "client_email": "pipelines@acme-analytics.iam.gserviceaccount.com",
        "client_id": "113456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def aws_payload() -> dict[str, str]:
    """An AWS access key pair with a random id and secret."""
    return {
        "access_key_id": "AKIA" + "".join(secrets.choice(AWS_KEY_ID_ALPHABET) for _ in range(16)),
        "secret_access_key": base64.b64encode(os.urandom(30)).decode(),
        "region": "eu-west-1",
    }
