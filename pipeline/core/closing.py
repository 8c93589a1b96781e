"""Context-manager support for sources and sinks: ``with Thing(...) as thing:`` closes it on the way out."""
from __future__ import annotations

from types import TracebackType
from typing import TypeVar

ClosingSelf = TypeVar("ClosingSelf", bound="Closing")


class Closing:
    """Base for objects that hold a file, a connection or an encoder and release it in ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: ClosingSelf) -> ClosingSelf:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
