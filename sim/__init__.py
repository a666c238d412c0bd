"""The simulated site: a stand-in for the platform, and (later) emulated hardware."""
