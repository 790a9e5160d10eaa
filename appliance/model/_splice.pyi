from collections.abc import Sequence
from typing import Any

def splice_words(
    width: int, bounds: Sequence[Any], removed: Sequence[Any], added: Sequence[Any]
) -> tuple[bytes, ...] | None: ...
def differ_lines(
    width: int, gone: bytes, came: bytes
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]] | None: ...
def differ_values(
    width: int, bounds: Sequence[Any], data: bytes, count: int
) -> tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]] | None: ...
