"""The one error the CA raises for anything a user can get wrong or fix."""

from __future__ import annotations

__all__ = ["CAError"]


class CAError(Exception):
    """A refused request or a broken CA directory; `str()` is a one-line message for humans."""
