"""Configuration errors: every problem in a file, each with its path."""

from __future__ import annotations


class ConfigError(Exception):
    """Raised with all the problems found in one configuration, never just the first."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))

    def report(self) -> str:
        head = f"invalid configuration in {self.source}" if self.source else "invalid configuration"
        return "\n".join([head + ":", *("  " + p for p in self.problems)])
