"""The network: the MQTT link, the staff API, systemd notification and staff tokens.

The only layer that imports aiomqtt/paho, FastAPI/uvicorn or
prometheus_client.  :mod:`~gateway.net.mqtt` turns paho's threads and
exceptions into asyncio and :class:`~gateway.net.mqtt.LinkDownError`;
:mod:`~gateway.net.api` reads the running gateway only through the narrow
protocol it declares.
"""
