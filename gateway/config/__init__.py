"""The gateway's configuration: typed, frozen models validated once at load.

* :mod:`~gateway.config.models` - the TOML file's sections and ``load_config``;
* :mod:`~gateway.config.profiles` - board wiring and reader profiles
  (firmware-config/boards, firmware-config/readers).
"""
