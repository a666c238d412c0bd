"""Credential readers: one folder per kind, each a sans-I/O codec and its transport.

* ``pn532/`` - NFC over UART: frame codec, reader task;
* ``wiegand/`` - cards and keypads on two GPIOs: frame decoder, GPIO reader;
* ``scanner/`` - QR and barcode scanners writing lines: line framer, serial task;
* ``osdp/`` - RS-485 readers with a secure channel (libosdp), and their keys.

:mod:`~gateway.hw.readers.base` says what every reader offers the gateway
and how it hands over what it read; :mod:`~gateway.hw.readers.build` makes
a reader from its config entry, by kind, from one table.
"""
