"""Load balancers: pick one endpoint of a cluster per request."""

from .round_robin import RoundRobin

__all__ = ["RoundRobin"]
