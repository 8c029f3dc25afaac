"""Connection options for every Kafka client the ledger uses, from one place in the settings.

The processor and relay use aiokafka, the publisher, admin and readers kafka-python, the runtime host
Faust. Each spells TLS and SASL differently; these functions translate ``Settings`` once, so a secured
cluster reaches every client or none. ``stop_client`` stops an aiokafka client (the processor's, the
relay's) without hanging on a broker that is gone.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from processor.retry import is_broker_outage
from processor.settings import Settings

# the processor's logger: its clients' stops are reported where they always were
log = logging.getLogger("benefits_ledger.processor")

# Settings that name the Kafka connection, for error messages.
BOOTSTRAP_SETTING = "LEDGER_KAFKA_BOOTSTRAP_SERVERS"


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile),
            password=password.get_secret_value() if password is not None else None,
        )
    return context


def _sasl(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return {}
    password = settings.kafka_sasl_password
    return {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": password.get_secret_value() if password is not None else None,
    }


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol, **_sasl(settings)}
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    return options


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's AIOKafkaConsumer and AIOKafkaProducer."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol, **_sasl(settings)}
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    return options


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for faust.App (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    sasl = _sasl(settings)
    return faust.SASLCredentials(
        username=sasl["sasl_plain_username"], password=sasl["sasl_plain_password"],
        mechanism=sasl["sasl_mechanism"], ssl_context=context,
    )


CLIENT_STOP_TIMEOUT_S = 5.0  # how long a client's stop may wait for a broker that may be gone


async def stop_client(client: Any, what: str) -> None:
    """Stop an aiokafka client without hanging on a broker that is gone."""
    try:
        await asyncio.wait_for(client.stop(), CLIENT_STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("%s did not stop within %.0f s (is the broker gone?); leaving it", what, CLIENT_STOP_TIMEOUT_S)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: let it through
        # aiokafka cancels its own tasks while it stops; one of them escaping is not our cancellation
        log.warning("%s was cancelled while it stopped (is the broker gone?)", what)
    except Exception as exc:
        if not is_broker_outage(exc):
            raise
        log.warning("%s stopped with %s: %s", what, type(exc).__name__, exc)
