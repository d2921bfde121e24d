"""Safe extraction of a zipped Shapefile upload.

Everything is checked on the zip's central directory before a byte is extracted:

* an entry name that is absolute (``/x``, ``\\x``, ``C:x``) or has a ``..`` part -> ``InvalidInput`` 422
  naming the entry (even if it is not the Shapefile we would read);
* the total uncompressed size over ``max_unpacked_bytes`` -> ``PayloadTooLarge`` 413;
* an entry of at least ``RATIO_MIN_BYTES`` that expands more than ``MAX_COMPRESSION_RATIO`` times ->
  ``InvalidInput`` 422 "zip bomb suspected". Smaller entries are not ratio-checked: a blank-padded
  ``.dbf`` compresses extremely well and cannot bomb anyone below this size.

Only the chosen Shapefile's own files (same path, any extension) are extracted, flat and renamed
``layer.<ext>``, into a fresh directory next to the upload, with a byte count that stops at the declared
size (headers can lie). The directory is removed when the ``with`` block ends.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from geoservice.errors import InvalidInput, PayloadTooLarge

#: An entry expanding more than this many times is treated as a zip bomb.
MAX_COMPRESSION_RATIO = 100
#: Entries smaller than this (uncompressed) are not ratio-checked.
RATIO_MIN_BYTES = 1 << 20


@contextmanager
def extracted_shapefile(
    path: Path, filename: str, *, layer: str | None, max_unpacked_bytes: int
) -> Iterator[tuple[Path, str]]:
    """Check the zip at ``path``, extract one Shapefile and yield ``(path to its .shp, its name)``.

    The name is the entry path without ``.shp`` (``"roads"``, ``"data/roads"``); ``layer`` chooses
    by that name or by the bare file name when the zip holds several Shapefiles.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise InvalidInput(f"{filename}: upload is not a valid zip archive (truncated?)", field="file") from None
    with archive:
        entries = _checked_entries(archive, filename, max_unpacked_bytes)
        name, members = _choose_shapefile(entries, filename, layer)
        workdir = Path(tempfile.mkdtemp(prefix=".unzip-", dir=path.parent))
        try:
            for entry in members:
                _extract(archive, entry, workdir / f"layer{PurePosixPath(entry.filename).suffix.lower()}", filename)
            yield workdir / "layer.shp", name
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _checked_entries(archive: zipfile.ZipFile, filename: str, max_bytes: int) -> list[zipfile.ZipInfo]:
    infos = archive.infolist()
    for info in infos:
        parts = info.filename.replace("\\", "/").split("/")
        if info.filename.startswith(("/", "\\")) or ".." in parts or parts[0][1:2] == ":":
            raise InvalidInput(f"{filename}: zip entry {info.filename!r} escapes the archive folder", field="file")
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise PayloadTooLarge(f"{filename} expands to {total} bytes, over the limit of {max_bytes} bytes", field="file")
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_MIN_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise InvalidInput(
                f"{filename}: zip bomb suspected: entry {info.filename!r} expands {ratio:.0f}x "
                f"(limit {MAX_COMPRESSION_RATIO}x)",
                field="file",
            )
    return [i for i in infos if not i.is_dir() and not _is_junk(i.filename)]


def _is_junk(name: str) -> bool:
    """macOS resource forks (``__MACOSX/``, ``._roads.shp``) are not data."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.parts[0] == "__MACOSX" or path.name.startswith("._")


def _choose_shapefile(
    entries: list[zipfile.ZipInfo], filename: str, layer: str | None
) -> tuple[str, list[zipfile.ZipInfo]]:
    stems = sorted(e.filename[:-4] for e in entries if e.filename.lower().endswith(".shp"))
    if not stems:
        listing = ", ".join(e.filename for e in entries[:10]) or "nothing"
        raise InvalidInput(f"{filename} holds no .shp file (it has: {listing})", field="file")
    if layer is not None:
        matches = [n for n in stems if layer in (n, PurePosixPath(n).name)]
        if len(matches) != 1:
            raise InvalidInput(
                f"layer {layer!r} is not a Shapefile in {filename}; it holds {quoted(stems)}",
                field="layer",
                extra={"layers": stems},
            )
        stems = matches
    elif len(stems) > 1:
        raise InvalidInput(
            f"{filename} holds {len(stems)} Shapefiles; choose one with layer: {quoted(stems)}",
            field="layer",
            extra={"layers": stems},
        )
    name = stems[0]
    members = [e for e in entries if PurePosixPath(e.filename).with_suffix("").as_posix().lower() == name.lower()]
    present = {PurePosixPath(e.filename).suffix.lower() for e in members}
    for needed in (".shx", ".dbf"):
        if needed not in present:
            raise InvalidInput(
                f"{filename}: {name}.shp has no {needed} file (a Shapefile needs .shp, .shx and .dbf)", field="file"
            )
    return name, members


def _extract(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, target: Path, filename: str) -> None:
    """Copy one entry in chunks, never writing more than its declared size."""
    written = 0
    try:
        with archive.open(entry) as src, target.open("wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > entry.file_size:
                    raise InvalidInput(
                        f"{filename}: zip bomb suspected: entry {entry.filename!r} is larger than declared",
                        field="file",
                    )
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, ValueError) as exc:
        raise InvalidInput(
            f"{filename}: upload is not a valid zip archive (truncated?): entry {entry.filename!r}: {exc}",
            field="file",
        ) from None


def quoted(names: list[str]) -> str:
    """Render names for a message: ``'a', 'b'``."""
    return ", ".join(repr(n) for n in names)
