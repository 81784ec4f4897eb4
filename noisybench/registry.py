"""One small registry type for every table of named builders (datasets, noise, models, losses).

Modelled on timm's ``register_model``: a decorator puts a plain function in a table under its
name; listings, lookups and the "unknown name" error all read that one table.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Iterator


class ConfigError(ValueError):
    """A configuration value is invalid. Raised before any training starts.

    The message is one line that names the bad value and what is allowed; the entry point
    prints it and exits with a non-zero status.
    """


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Callable], Callable]:
        """Decorator: ``@REG.register()`` uses the function's name, ``@REG.register("x")`` names it.

        Keyword arguments are stored as metadata (``REG.meta(name)``).
        """

        def wrap(fn: Callable) -> Callable:
            key = name or fn.__name__
            if key in self._builders:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._builders[key] = fn
            self._meta[key] = dict(meta)
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ConfigError(self.unknown_message(name))
        return self._builders[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._builders if fnmatch.fnmatch(n, pattern))

    def unknown_message(self, name: Any) -> str:
        close = difflib.get_close_matches(str(name), self._builders, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{hint}; registered: {', '.join(self.names())}"

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._builders)
