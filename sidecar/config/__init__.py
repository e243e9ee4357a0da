"""Configuration: frozen models, loaded and validated with every problem reported.

The loader is imported on first use: the sections' own readers (auth, rate limits, health...)
import `config.fields`, and the loader imports them, so loading it here would be a cycle."""

from ..lazy import lazy_exports

_WHERE = {"Config": "model", "ConfigError": "errors", "Endpoint": "model", "Route": "model",
          "load_data": "load", "load_file": "load"}

__all__ = ["Config", "ConfigError", "Endpoint", "Route", "load_data", "load_file"]

__getattr__ = lazy_exports(__name__, _WHERE)
