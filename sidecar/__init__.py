"""sidecar: a service-mesh sidecar agent."""

__version__ = "0.1.0"
