"""Discovery sources behind one interface: endpoints per service as watched values."""

from .base import Discovery, EndpointSet
from .static import StaticFileDiscovery

__all__ = ["Discovery", "EndpointSet", "StaticFileDiscovery"]
