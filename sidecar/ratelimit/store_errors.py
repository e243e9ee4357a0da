"""The global store's failure, apart from the store: the limiter catches it without
importing redis (see redis_store.py)."""

__all__ = ["StoreUnavailable"]


class StoreUnavailable(Exception):
    """Redis did not answer the check in time (or at all): answer from the fallback."""
