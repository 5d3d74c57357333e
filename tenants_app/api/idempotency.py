"""`Idempotency-Key` support: a repeated request gets the first response, a different one a 409."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from bigquery_backend.exceptions import BackendUnavailable
from tenants_app.api.errors import error_response
from tenants_app.kms import DecryptionFailed, KmsError, KmsUnavailable, aad_for, get_kms
from tenants_app.models import IdempotencyRecord
from tenants_app.services.actors import api_key_actor, staff_actor
from tenants_app.services.errors import ServiceError
from tenants_app.services.retries import request_seed, retry_of_unknown_outcome

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")
# Longer than gunicorn's worker timeout (convergence/gunicorn_conf.py): no live request is older.
STALE_AFTER = timedelta(minutes=5)

Handler = Callable[..., Response]


def principal_of(request: Request) -> str:
    """Who the request acts as: keys are scoped per caller, so two callers never share a record."""
    api_key_id = getattr(request.user, "api_key_id", None)
    if api_key_id is not None:
        return api_key_actor(api_key_id)
    return staff_actor(str(request.user.pk))


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _seed(principal: str, key: str, fingerprint: str) -> str:
    """What ids of rows this request creates derive from: caller, key, method, path and body."""
    # The fingerprint covers method, path and body: the same key reused for another body (only
    # possible once its record has expired) then creates new rows rather than finding old ones.
    return hashlib.sha256(f"{principal}\n{key}\n{fingerprint}".encode()).hexdigest()


# A request that failed with 503 (BigQuery or KMS down mid-way) may have done part or all of its work:
# its record is kept in this state, so that the same request sent again is known as the retry of one
# whose outcome is unknown (`is_retry_of_unknown_outcome`), and services can finish it, e.g. show again
# the key a lost answer carried, instead of refusing a duplicate.
UNKNOWN_OUTCOME = 503


def idempotent(handler: Handler) -> Handler:
    """Wrap an APIView method: successful responses are stored (encrypted) and replayed for repeats."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not KEY_PATTERN.fullmatch(key):
            return error_response(
                400,
                "validation_failed",
                "Invalid Idempotency-Key.",
                {HEADER: ["Use 1-200 printable ASCII characters."]},
            )
        principal = principal_of(request)
        fingerprint = _fingerprint(request)
        aad = aad_for("idempotency", principal, key)
        ttl = timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
        # Records past the TTL go, everyone's: they may hold an encrypted new API key, kept no longer
        # than a replay needs. A key older than the TTL is thereby free again.
        IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - ttl).delete()
        # A record still "in progress" long after any request could run was left by a killed worker:
        # without this its key would answer 409 until the TTL.
        IdempotencyRecord.objects.filter(
            principal=principal,
            key=key,
            status_code__isnull=True,
            created_at__lt=timezone.now() - STALE_AFTER,
        ).delete()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    principal=principal, key=key, request_fingerprint=fingerprint
                )
        except IntegrityError:
            replayed, record = _replay(principal, key, fingerprint, aad)
            if replayed is not None:
                return replayed
            retrying = True
        else:
            retrying = False
        try:
            # The first attempt and its retries derive the same ids for the rows they create
            # (`retries.stable_id`), so a retry after a lost answer finds the row instead of adding one.
            with retry_of_unknown_outcome(retrying), request_seed(_seed(principal, key, fingerprint)):
                response = handler(view, request, *args, **kwargs)
        except ServiceError as exc:
            _forget_or_keep_unknown(record, exc.status)
            raise
        except (BackendUnavailable, KmsUnavailable):
            _forget_or_keep_unknown(record, UNKNOWN_OUTCOME)
            raise
        except BaseException:
            # Failures are not remembered: the client may retry the same request with the same key.
            record.delete()
            raise
        if not 200 <= response.status_code < 300:
            _forget_or_keep_unknown(record, response.status_code)
            return response
        payload = json.dumps(response.data, default=str).encode()
        try:
            record.encrypted_response = get_kms().encrypt(payload, aad=aad)
        except KmsError as exc:
            # The change is done: answering 503 now would lose a response that may hold a new key.
            # Only the replay is lost; a repeat of the request is then treated as a new one.
            logger.warning("idempotent response not stored for %s: %s", principal, type(exc).__name__)
            record.delete()
            return response
        record.status_code = response.status_code
        record.save(update_fields=["encrypted_response", "status_code"])
        return response

    return wrapper


def _forget_or_keep_unknown(record: IdempotencyRecord, status: int) -> None:
    """A refused request is forgotten (the key is free again); an unavailable one is kept as unknown."""
    if status != UNKNOWN_OUTCOME:
        record.delete()
        return
    record.status_code = UNKNOWN_OUTCOME
    record.encrypted_response = None
    record.save(update_fields=["status_code", "encrypted_response"])


def _replay(
    principal: str, key: str, fingerprint: str, aad: bytes
) -> tuple[Response, None] | tuple[None, IdempotencyRecord]:
    """The answer for a repeated key, or (None, record) when the repeat is to run as a retry."""
    record = IdempotencyRecord.objects.filter(principal=principal, key=key).first()
    if record is None:
        # The first request failed and released the key between our insert and this read.
        return error_response(409, "request_in_progress", "Retry the request."), None
    if record.request_fingerprint != fingerprint:
        return error_response(
            409, "idempotency_key_reused", "This Idempotency-Key was used for a different request."
        ), None
    if record.status_code == UNKNOWN_OUTCOME:
        # Taken over by one retry at a time: the conditional UPDATE lets exactly one through.
        taken = IdempotencyRecord.objects.filter(pk=record.pk, status_code=UNKNOWN_OUTCOME).update(
            status_code=None, created_at=timezone.now()
        )
        if taken:
            record.status_code = None
            return None, record
    if record.status_code is None or record.encrypted_response is None:
        response = error_response(
            409, "request_in_progress", "The first request with this key is still running."
        )
        response["Retry-After"] = "1"
        return response, None
    try:
        data = json.loads(get_kms().decrypt(bytes(record.encrypted_response), aad=aad))
    except DecryptionFailed:
        # The local key was replaced since: the stored response is lost, which is no client's fault.
        logger.error("idempotent response of %s can no longer be decrypted; dropped", principal)
        record.delete()
        return error_response(409, "request_in_progress", "Retry the request."), None
    response = Response(data, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response, None
