"""appliance: a homelab AI gateway."""

__version__ = "0.1.0"
