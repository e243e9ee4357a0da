"""Configuration: frozen models, loaded and validated with every problem reported."""

from .errors import ConfigError
from .load import load_data, load_file
from .model import Config, Endpoint, Route

__all__ = ["Config", "ConfigError", "Endpoint", "Route", "load_data", "load_file"]
