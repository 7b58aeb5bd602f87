"""The encoding of a compacted run-log chunk: consecutive lines in one compressed blob.

Layout (version 1): one version byte, then zlib (deflate, level 6) of
  count (uint32) · stream names (uint8 count, then uint8 length + UTF-8 name each) ·
  timestamps (int64 per line: microseconds since the epoch, the first absolute, then deltas) ·
  stream of each line (uint8 per line: an index into the names) ·
  byte length of each line (uint32 per line) · the lines' UTF-8 bytes, back to back.
All integers little-endian. Columns compress better than interleaved records (the timestamps
and lengths are small repetitive numbers), and the text as one byte string lets a search fold
and scan a whole chunk with two C calls (`bytes.lower`, `bytes.find`) instead of a loop per line.
Sequence numbers are not stored: a chunk holds `first_sequence` .. `first_sequence + count - 1`.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from codexk8s.domain.logs import StoredLine, utc

VERSION = 1
LEVEL = 6
LINES_PER_CHUNK = 1000
BYTES_PER_CHUNK = 1024 * 1024  # a chunk of very long lines closes early
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_COUNT = struct.Struct("<I")


class ChunkFormatError(ValueError):
    """A stored chunk this code cannot read (a newer version, or damaged)."""


def _little_endian(values: array) -> bytes:  # type: ignore[type-arg]
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def _from_little_endian(code: str, data: bytes) -> array:  # type: ignore[type-arg]
    values = array(code)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def encode(lines: Sequence[StoredLine]) -> bytes:
    """LINES (consecutive sequences) as one chunk."""
    names: list[str] = []
    index: dict[str, int] = {}
    streams = array("B")
    stamps = array("q")
    lengths = array("I")
    texts: list[bytes] = []
    previous = 0
    for line in lines:
        position = index.get(line.stream)
        if position is None:
            position = index[line.stream] = len(names)
            names.append(line.stream)
        streams.append(position)
        micros = (utc(line.ts) - EPOCH) // _MICROSECOND
        stamps.append(micros - previous)
        previous = micros
        text = line.line.encode("utf-8", "surrogatepass")
        lengths.append(len(text))
        texts.append(text)
    header = bytearray(_COUNT.pack(len(lines)))
    header.append(len(names))
    for name in names:
        raw = name.encode()
        header.append(len(raw))
        header += raw
    payload = b"".join(
        [bytes(header), _little_endian(stamps), streams.tobytes(), _little_endian(lengths), *texts]
    )
    return bytes([VERSION]) + zlib.compress(payload, LEVEL)


class Chunk:
    """A decoded chunk: lines are built on demand (a search needs only the text)."""

    def __init__(self, first_sequence: int, data: bytes) -> None:
        if not data or data[0] != VERSION:
            raise ChunkFormatError(f"unknown log chunk version {data[:1]!r}")
        payload = zlib.decompress(data[1:])
        (count,) = _COUNT.unpack_from(payload)
        offset = _COUNT.size
        names = []
        for _ in range(payload[offset]):
            size = payload[offset + 1]
            names.append(payload[offset + 2 : offset + 2 + size].decode())
            offset += 1 + size
        offset += 1
        self.first_sequence = first_sequence
        self.count = count
        self._names = names
        self._stamps = _from_little_endian("q", payload[offset : offset + 8 * count])
        offset += 8 * count
        self._streams = payload[offset : offset + count]
        offset += count
        lengths = _from_little_endian("I", payload[offset : offset + 4 * count])
        offset += 4 * count
        self.text = payload[offset:]
        # Where each line starts in TEXT, and where the last one ends.
        self.starts = [0, *accumulate(lengths)]
        if self.starts[-1] != len(self.text):
            raise ChunkFormatError("log chunk text does not match its line lengths")

    def lines(self, first: int | None = None, last: int | None = None) -> list[StoredLine]:
        """The lines with sequences FIRST..LAST (both inclusive, clipped to the chunk)."""
        low = max(0, (first if first is not None else self.first_sequence) - self.first_sequence)
        high = min(self.count, (last if last is not None else 1 << 62) - self.first_sequence + 1)
        if low >= high:
            return []
        stamps = list(accumulate(self._stamps))
        starts, text, names, streams = self.starts, self.text, self._names, self._streams
        return [
            StoredLine(
                sequence=self.first_sequence + i,
                stream=names[streams[i]],
                line=text[starts[i] : starts[i + 1]].decode("utf-8", "surrogatepass"),
                ts=EPOCH + stamps[i] * _MICROSECOND,
            )
            for i in range(low, high)
        ]

    def matching(self, folded_needle: bytes) -> list[int]:
        """Sequences of the lines containing FOLDED_NEEDLE (UTF-8, ASCII letters lower-cased),
        ignoring ASCII case: the same rule as the SQL search over rows."""
        if not folded_needle:
            return []
        haystack = self.text.lower()  # bytes.lower folds ASCII letters only
        starts, size = self.starts, len(folded_needle)
        found: list[int] = []
        position = haystack.find(folded_needle)
        while position >= 0:
            line = bisect_right(starts, position) - 1
            end = starts[line + 1]
            if position + size <= end:  # within one line, not across two
                found.append(self.first_sequence + line)
                position = haystack.find(folded_needle, end)  # one hit per line is enough
            else:
                position = haystack.find(folded_needle, position + 1)
        return found


def split(lines: Sequence[StoredLine]) -> list[list[StoredLine]]:
    """LINES (in sequence order) cut into chunks of at most LINES_PER_CHUNK lines and about
    BYTES_PER_CHUNK bytes, each of consecutive sequences."""
    chunks: list[list[StoredLine]] = []
    current: list[StoredLine] = []
    size = 0
    for line in lines:
        if current and (
            len(current) >= LINES_PER_CHUNK
            or size >= BYTES_PER_CHUNK
            or line.sequence != current[-1].sequence + 1
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line.line) + 16
    if current:
        chunks.append(current)
    return chunks
