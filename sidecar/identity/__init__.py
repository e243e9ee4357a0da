"""Workload identity: SPIFFE IDs here; the CA in `sidecar.identity.ca` (imported on its own,
as it loads `cryptography`, which `sidecar run` without mTLS does not need)."""

from .spiffe import SpiffeId, SpiffeIdError, workload

__all__ = ["SpiffeId", "SpiffeIdError", "workload"]
