"""The platform contract: message shapes, dataset documents and their JSON Schemas.

* :mod:`~gateway.wire.dataset` - the dataset and change documents (pydantic)
  and their conversion to :mod:`gateway.core.model` values;
* :mod:`~gateway.wire.protocol` - topics and every message on them;
* :mod:`~gateway.wire.schemas` - the JSON Schema files of docs/schemas;
* :mod:`~gateway.wire.cloudkit` - the platform's side: signing snapshots and
  deltas as the gateway expects them.

Pure data and validation, like the core: no I/O.
"""
