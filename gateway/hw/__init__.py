"""Hardware: doors, member feedback and credential readers, behind small seams.

The only layer that imports gpiozero, pyserial or libosdp.  Each device takes
its pin factory, serial URL and clock as arguments, so tests and the
simulator run the same code on gpiozero's ``MockFactory`` and on
pseudo-terminals; the real pin factory is chosen in one place
(:func:`gateway.hw.pins.real_pin_factory`) and never falls back to a mock.
"""
