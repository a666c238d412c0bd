"""Does a broker accept this gateway's certificate?  One short connection per URL.

Provisioning asks this before it switches a gateway to a new certificate,
so a certificate the broker refuses never replaces one that works.
"""

from __future__ import annotations

import asyncio
import secrets

import aiomqtt

from gateway.config.models import Config
from gateway.errors import DoorgwError
from gateway.net.mqtt import LinkDownError, tls_context

#: Seconds each broker URL gets to accept the certificate.
PROBE_TIMEOUT = 15.0


async def probe_brokers(config: Config) -> str:
    """The first of ``[mqtt] urls`` that accepts a session; LinkDownError naming each failure."""
    if config.mqtt is None:
        raise LinkDownError("the configuration has no [mqtt] section")
    mqtt = config.mqtt
    problems = []
    for url in mqtt.urls:
        scheme, _, rest = url.partition("://")
        host, _, port = rest.rpartition(":")
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                async with aiomqtt.Client(
                    host,
                    int(port),
                    identifier=f"{config.gateway.id}-enroll-{secrets.token_hex(3)}",
                    tls_context=tls_context(mqtt.ca_file, mqtt.cert_file, mqtt.key_file)
                    if scheme == "mqtts"
                    else None,
                ):
                    return url
        except (aiomqtt.MqttError, OSError, TimeoutError, ValueError, DoorgwError) as exc:
            problems.append(f"{url}: {exc or type(exc).__name__}")
    raise LinkDownError("no broker accepted the new certificate: " + "; ".join(problems))
