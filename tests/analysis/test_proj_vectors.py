"""PROJ's own test vectors, run through the reprojection path.

Sources (see SOURCE.txt there): gie files (``operation`` pipelines and ``crs_src``/``crs_dst`` pairs),
the IOGP GIGS series converted by PROJ, and the cs2cs CLI expectations.

* ``operation`` cases build ``Transformer.from_pipeline`` and transform through
  ``reproject.transform_coordinates``, the function ``reproject`` uses.
* CRS pairs (gie ``crs_src``/``crs_dst`` and cs2cs) go through ``reproject()`` itself: parse the
  CRSs, choose the transformation for the point's area, transform, check the result is finite.

Cases that need a grid, depend on time (a t coordinate with a time-dependent operation), or use
features the path does not have (cs2cs options, environment overrides) are skipped and counted by
reason. Every ``expect`` and ``roundtrip`` line (gie) and every input line (cs2cs) is one case.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import re
import shlex
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
import yaml
from pyproj import CRS, Transformer
from pyproj.enums import TransformDirection
from pyproj.exceptions import ProjError

from geoservice.analysis.crs import authority_order_is_yx, get_transformer, parse_crs
from geoservice.analysis.errors import AnalysisInputError, TransformationUnavailable, UnknownCRS

# The module, not the ``reproject`` function the package re-exports under the same name.
rp = importlib.import_module("geoservice.analysis.reproject")

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "peer-tests" / "proj"
GIE_FILES = sorted([*VECTORS.glob("gie/*.gie"), *VECTORS.glob("gigs/*.gie*")])
CS2CS_FILE = VECTORS / "cli" / "test_cs2cs_various.yaml"

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"PROJ test vectors not found at {VECTORS}")

FWD, INV = TransformDirection.FORWARD, TransformDirection.INVERSE
GRID_WORDS = re.compile(r"(nadgrids|geoidgrids|grids|gridshift|tinshift|defmodel|deformation|\.gtx|\.gsb|\.tif)")
GRID_ERRORS = re.compile(r"File not found|could not find required grid")


def needs_grid(definition: str, error: str) -> bool:
    """Whether creating ``definition`` failed only because a grid file is missing."""
    return bool(GRID_WORDS.search(definition) and GRID_ERRORS.search(error))


@dataclass
class Outcome:
    """The result of one case: passed, failed (with detail) or skipped (with reason)."""

    where: str
    status: str
    reason: str = ""


@dataclass
class Tally:
    """Outcomes of one file."""

    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, where: str, status: str, reason: str = "") -> None:
        self.outcomes.append(Outcome(where, status, reason))

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for o in self.outcomes:
            counts["skipped: " + o.reason if o.status == "skipped" else o.status] += 1
        counts["ran"] = counts["passed"] + counts["failed"]
        return counts


# --------------------------------------------------------------------------------------------------
# Reading numbers, angles and tolerances as gie and cs2cs write them
# --------------------------------------------------------------------------------------------------

_DMS = re.compile(
    r"""^(?P<sign>[+-]?)(?P<deg>\d+(?:\.\d*)?)d(?:(?P<min>\d+(?:\.\d*)?)')?"""
    r"""(?:(?P<sec>\d+(?:\.\d*)?)"?)?(?P<hemi>[NSEWnsew])?$"""
)
_UNITS = {"km": 1e3, "m": 1.0, "dm": 0.1, "cm": 0.01, "mm": 1e-3, "um": 1e-6, "nm": 1e-9}
_GRS80_M_PER_DEG = 111319.4908


def number(token: str) -> float | None:
    """Return a decimal number, 'NaN', or a DMS angle (``12d30'15.5"W``) in degrees; None if not a number."""
    try:
        return float(token.replace("_", ""))
    except ValueError:
        pass
    match = _DMS.match(token)
    if match is None:
        return None
    value = float(match["deg"]) + float(match["min"] or 0) / 60 + float(match["sec"] or 0) / 3600
    negative = (match["sign"] == "-") != ((match["hemi"] or "").upper() in ("S", "W"))
    return -value if negative else value


def numbers(text: str, limit: int = 4) -> list[float]:
    """Return the leading numbers of ``text`` (at most ``limit``)."""
    values: list[float] = []
    for token in text.split()[:limit]:
        value = number(token)
        if value is None:
            break
        values.append(value)
    return values


_LEADING_NUMBER = re.compile(r"^[+-]?(?:\d[\d_]*\.?[\d_]*|\.\d+)(?:[eE][+-]?\d+)?")


def length(text: str, default: float) -> float:
    """Read a gie length such as ``0.1 mm`` or ``2 deg`` in metres.

    As gie's strtod_scaled: the number's leading digits, then the unit from the *next* word, so
    ``1cm`` (no space) is 1 m there, and the upstream expectations were validated that way.
    """
    tokens = text.split()
    match = _LEADING_NUMBER.match(tokens[0]) if tokens else None
    if match is None:
        return default
    value = float(match.group().replace("_", ""))
    unit = tokens[1] if len(tokens) > 1 else "m"
    if unit == "deg":
        return value * _GRS80_M_PER_DEG
    if unit == "rad":
        return math.degrees(value) * _GRS80_M_PER_DEG
    return value * _UNITS.get(unit, 1.0)


def angular_distance(a: np.ndarray, b: np.ndarray, radius: float, lat_first: bool) -> float:
    """Distance in metres between two lon/lat (+h) points given in degrees, on a sphere of ``radius``."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.inf
    lon1, lat1, lon2, lat2 = (a[1], a[0], b[1], b[0]) if lat_first else (a[0], a[1], b[0], b[1])
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    hav = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    horizontal = 2 * radius * math.asin(math.sqrt(min(1.0, max(0.0, hav))))
    vertical = (a[2] - b[2]) if len(a) > 2 else 0.0
    return math.hypot(horizontal, vertical)


# --------------------------------------------------------------------------------------------------
# What PROJ says about an operation's units (pyproj does not expose proj_angular_output)
# --------------------------------------------------------------------------------------------------


class _ProjUnits:
    """Ask the libproj that pyproj loaded whether an operation's input/output is angular."""

    def __init__(self) -> None:
        path = next((line.split()[-1] for line in open("/proc/self/maps") if "libproj" in line), None)
        if path is None:
            raise RuntimeError("libproj is not loaded")
        lib = ctypes.CDLL(path)
        lib.proj_context_create.restype = ctypes.c_void_p
        lib.proj_context_set_search_paths.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.proj_context_use_proj4_init_rules.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.proj_log_level.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.proj_create.restype = ctypes.c_void_p
        lib.proj_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.proj_destroy.argtypes = [ctypes.c_void_p]
        for name in ("proj_angular_input", "proj_angular_output", "proj_degree_input", "proj_degree_output"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.lib = lib
        self.ctx = lib.proj_context_create()
        paths = (ctypes.c_char_p * 1)(pyproj.datadir.get_data_dir().encode())
        lib.proj_context_set_search_paths(self.ctx, 1, paths)
        lib.proj_context_use_proj4_init_rules(self.ctx, 1)  # as pyproj's contexts do
        lib.proj_log_level(self.ctx, 0)

    @cache  # noqa: B019 - one instance for the session
    def angular(self, definition: str) -> dict[TransformDirection, tuple[bool, bool]]:
        """Return {direction: (angular input, angular output)}; degrees count as angular."""
        pj = self.lib.proj_create(self.ctx, definition.encode())
        if not pj:
            raise ValueError(definition)
        try:
            result = {}
            for direction, code in ((FWD, 1), (INV, -1)):
                inp = self.lib.proj_angular_input(pj, code) or self.lib.proj_degree_input(pj, code)
                out = self.lib.proj_angular_output(pj, code) or self.lib.proj_degree_output(pj, code)
                result[direction] = (bool(inp), bool(out))
            return result
        finally:
            self.lib.proj_destroy(pj)


@cache
def proj_units() -> _ProjUnits:
    return _ProjUnits()


def ellipsoid_radius(definition: str) -> float:
    """Semi-major axis (m) of the operation's own ellipsoid, which gie measures angular errors on."""
    top = re.split(r"(?:^|\s)\+?step(?:\s|$)", definition, maxsplit=1)[0]
    params = dict(re.findall(r"\+?(\w+)=(\S+)", top))
    for key in ("R", "a"):
        value = number(params.get(key, ""))
        if value is not None:
            return value
    ellps = pyproj.get_ellps_map().get(params.get("ellps", "GRS80"), {})
    return float(ellps.get("a", 6378137.0))


# --------------------------------------------------------------------------------------------------
# gie
# --------------------------------------------------------------------------------------------------

GIE_TAGS = (
    "<gie-strict>",
    "</gie-strict>",
    "<gie>",
    "</gie>",
    "operation",
    "crs_src",
    "crs_dst",
    "use_proj4_init_rules",
    "accept",
    "expect",
    "roundtrip",
    "banner",
    "verbose",
    "direction",
    "tolerance",
    "ignore",
    "require_grid",
    "echo",
    "skip",
)


def _chomp(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _decorative(line: str) -> bool:
    return len(line) >= 5 and len(set(line[:5])) == 1


def _tag(line: str) -> str | None:
    return next((t for t in GIE_TAGS if line.startswith(t)), None)


def _shrink(args: str) -> str:
    args = re.sub(r"\s+", " ", args).strip()
    return re.sub(r"\s*,\s*", ",", re.sub(r"\s*=\s*", "=", args))


def gie_commands(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """Yield (line number, tag, arguments) as gie reads them; tag None for a line gie would reject."""
    lines = path.read_text(encoding="utf-8").splitlines()
    mode, i = "", 0
    while i < len(lines):
        line = _chomp(lines[i])
        if not mode:
            mode = "strict" if line.startswith("<gie-strict>") else "loose" if line.startswith("<gie>") else ""
            i += 1
            continue
        tag = _tag(line)
        if mode == "strict":
            if not line or _decorative(line):
                i += 1
                continue
            if tag is None:
                yield i + 1, None, line
                i += 1
                continue
            start, args = i, line[len(tag) :]
            while args.endswith("\\") and i + 1 < len(lines):
                i += 1
                args = args[:-1] + " " + _chomp(lines[i])
            i += 1
        else:
            if tag is None:
                i += 1
                continue
            start, args = i, line[len(tag) :]
            i += 1
            while i < len(lines) and not (_tag(_chomp(lines[i])) or _decorative(_chomp(lines[i]))):
                args += " " + _chomp(lines[i])
                i += 1
        if tag in ("</gie-strict>", "</gie>"):
            mode = ""
            continue
        yield start + 1, tag, _shrink(args)


@dataclass
class _Operation:
    """One gie operation (a pipeline) or CRS pair and the settings that apply to it."""

    kind: str  # "pipeline" or "crs"
    definition: str = ""
    src: str = ""
    dst: str = ""
    transformer: Transformer | None = None
    error: str = ""
    tolerance: float = 0.0005
    direction: TransformDirection = FWD
    skip_reason: str = ""
    has_accept: bool = False


class GieRunner:
    """Interpret one gie file, recording an outcome per ``expect`` and ``roundtrip``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.tally = Tally()
        self.op: _Operation | None = None
        self.accept: list[float] | None = None  # like gie, survives a new operation
        self.crs_src = ""
        self.crs_dst = ""

    def run(self) -> Tally:
        if self.name.endswith(".failing"):
            for line, tag, _ in gie_commands(self.path):
                if tag in ("expect", "roundtrip"):
                    self.tally.add(f"{self.name}:{line}", "skipped", "file marked failing upstream (.failing)")
            return self.tally
        for line, tag, args in gie_commands(self.path):
            where = f"{self.name}:{line}"
            if tag is None:
                self.tally.add(where, "skipped", "unsupported gie directive")
            elif tag == "skip":
                break
            else:
                self.dispatch(where, tag, args)
        return self.tally

    def dispatch(self, where: str, tag: str, args: str) -> None:
        if tag == "operation":
            self.op = self._pipeline(args)
        elif tag in ("crs_src", "crs_dst"):
            setattr(self, tag, args)
            if self.crs_src and self.crs_dst:
                self.op = _Operation("crs", src=self.crs_src, dst=self.crs_dst)
                self.crs_src = self.crs_dst = ""
        elif self.op is None:
            return
        elif tag == "tolerance":
            self.op.tolerance = length(args, 0.0005)
        elif tag == "direction":
            self.op.direction = INV if args[:1].lower() in ("i", "r") else FWD
        elif tag == "require_grid":
            self.op.skip_reason = "needs a grid"
        elif tag == "ignore":
            self.op.skip_reason = self.op.skip_reason or "gie 'ignore' of an error code"
        elif tag == "accept":
            self.accept = numbers(args)
            self.op.has_accept = True
        elif tag == "expect":
            self.expect(where, args)
        elif tag == "roundtrip":
            self.roundtrip(where, args)

    @staticmethod
    def _pipeline(definition: str) -> _Operation:
        op = _Operation("pipeline", definition=definition)
        try:
            op.transformer = Transformer.from_pipeline(definition)
        except ProjError as exc:
            op.error = str(exc)
        return op

    # -- expect ------------------------------------------------------------------------------------

    def expect(self, where: str, args: str) -> None:
        op = self.op
        assert op is not None
        if op.skip_reason:
            self.tally.add(where, "skipped", op.skip_reason)
            return
        wants_failure = args.startswith("failure")
        if op.kind == "pipeline" and op.error:
            if wants_failure:
                self.tally.add(where, "passed")
            elif needs_grid(op.definition, op.error):
                self.tally.add(where, "skipped", "needs a grid")
            else:
                self.tally.add(where, "failed", f"cannot create {op.definition!r}: {op.error}")
            return
        # gie reuses the last accept of an earlier operation; only an expected failure (of creating
        # the operation) is meant that way, a coordinate expectation without its accept is a slip.
        if self.accept is None or len(self.accept) < 2 or not (op.has_accept or wants_failure):
            reason = "malformed: expect without a preceding accept in its operation"
            self.tally.add(where, "skipped", reason)
            return
        expected = numbers(args)
        if not wants_failure and len(expected) < 2:
            self.tally.add(where, "failed", f"cannot read expected coordinate {args!r}")
            return
        try:
            got, angular, radius, lat_first = self.transform(op, self.accept, op.direction)
        except _Skip as skip:
            self.tally.add(where, "skipped", skip.reason)
            return
        except AnalysisInputError as exc:  # reproject refuses non-finite output
            status = "passed" if wants_failure else "failed"
            self.tally.add(where, status, "" if wants_failure else exc.detail)
            return
        if wants_failure:
            failed = not np.isfinite(got[:2]).all()
            self.tally.add(where, "passed" if failed else "failed", "" if failed else f"got {got}, expected failure")
            return
        self.tally.add(where, *compare(got, expected, op.tolerance, angular, radius, lat_first))

    def transform(
        self, op: _Operation, point: list[float], direction: TransformDirection
    ) -> tuple[np.ndarray, bool, float, bool]:
        """Return (output coordinate, angular output?, ellipsoid radius, latitude first?)."""
        if op.kind == "crs":
            src, dst = (op.src, op.dst) if direction is FWD else (op.dst, op.src)
            return transform_crs_pair(src, dst, point, allow_ballpark=False)
        assert op.transformer is not None
        check_time(op.transformer, point, direction)
        coords = np.array([point[:3]], dtype=float)
        got = rp.transform_coordinates(coords, op.transformer, direction=direction)[0]
        try:
            angular = proj_units().angular(op.definition)[direction][1]
        except ValueError as exc:
            raise _Skip("libproj cannot create the operation outside pyproj") from exc
        return got, angular, ellipsoid_radius(op.definition), False

    # -- roundtrip ---------------------------------------------------------------------------------

    def roundtrip(self, where: str, args: str) -> None:
        op = self.op
        assert op is not None
        if op.skip_reason or op.kind != "pipeline":
            self.tally.add(where, "skipped", op.skip_reason or "roundtrip on a CRS pair")
            return
        if op.error:
            reason = "needs a grid" if needs_grid(op.definition, op.error) else ""
            self.tally.add(where, "skipped" if reason else "failed", reason or f"cannot create: {op.error}")
            return
        if self.accept is None or len(self.accept) < 2:
            self.tally.add(where, "skipped", "malformed: roundtrip without a preceding accept")
            return
        tokens = args.split()
        # At most 100 trips (gie files ask up to 1000) to keep the suite fast; drift shows well before.
        trips = min(100, int(number(tokens[0]) or 100)) if tokens else 100
        tolerance = length(" ".join(tokens[1:]), op.tolerance) if len(tokens) > 1 else op.tolerance
        assert op.transformer is not None
        try:
            check_time(op.transformer, self.accept, op.direction)
        except _Skip as skip:
            self.tally.add(where, "skipped", skip.reason)
            return
        start = np.array([[*self.accept[:3], 0.0][:3]], dtype=float)  # gie round-trips x, y, z (z 0)
        back = INV if op.direction is FWD else FWD
        coords = rp.transform_coordinates(start, op.transformer, direction=op.direction)
        for _ in range(trips - 1):
            coords = rp.transform_coordinates(coords, op.transformer, direction=back)
            coords = rp.transform_coordinates(coords, op.transformer, direction=op.direction)
        coords = rp.transform_coordinates(coords, op.transformer, direction=back)
        angular = proj_units().angular(op.definition)[op.direction][0]
        status, detail = compare(coords[0], list(start[0]), tolerance, angular, ellipsoid_radius(op.definition), False)
        self.tally.add(where, status, f"roundtrip x{trips}: {detail}" if detail else "")


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_time(transformer: Transformer, point: list[float], direction: TransformDirection) -> None:
    """Raise _Skip if ``point`` has a time coordinate the result depends on (the path has no time)."""
    if len(point) < 4:
        return
    x, y, z, t = point[:4]
    with_time = transformer.transform(x, y, z, t, errcheck=False, direction=direction)
    without = transformer.transform(x, y, z, errcheck=False, direction=direction)
    same = np.allclose(np.array(with_time[:3]), np.array(without), rtol=1e-12, atol=1e-12, equal_nan=True)
    if not same:
        raise _Skip("time-dependent (t coordinate)")


def compare(
    got: np.ndarray, expected: list[float], tolerance: float, angular: bool, radius: float, lat_first: bool
) -> tuple[str, str]:
    """Compare as gie does: x, y and (if expected) z; angular results by distance on the ellipsoid."""
    dims = 3 if len(expected) >= 3 and len(got) >= 3 else 2
    want = np.array(expected[:dims], dtype=float)
    have = np.array(got[:dims], dtype=float)
    if np.isnan(want).any() or np.isnan(have).any():
        same_nan = bool((np.isnan(want) == np.isnan(have)).all())
        if same_nan and np.allclose(want[~np.isnan(want)], have[~np.isnan(have)], atol=tolerance):
            return "passed", ""
        return "failed", f"got {have.tolist()}, expected {want.tolist()}"
    if angular:
        distance = angular_distance(have, want, radius, lat_first)
    else:
        distance = float(np.linalg.norm(have - want))
    if distance <= tolerance:
        return "passed", ""
    return "failed", f"got {have.tolist()}, expected {want.tolist()}, off by {distance:.3g} m > {tolerance:g} m"


# --------------------------------------------------------------------------------------------------
# CRS pairs through reproject()
# --------------------------------------------------------------------------------------------------



@cache
def _crs(text: str) -> CRS:
    return parse_crs(text, field="crs")


def transform_crs_pair(
    src: str, dst: str, point: list[float], *, allow_ballpark: bool, fallback_ok: bool = False
) -> tuple[np.ndarray, bool, float, bool]:
    """Reproject one point (authority axis order, as the vectors give it) from ``src`` to ``dst``.

    Returns (output in ``dst`` authority order, angular?, radius, latitude first?).
    """
    try:
        src_crs, dst_crs = _crs(src), _crs(dst)
    except UnknownCRS as exc:
        raise _Skip(f"CRS not accepted by parse_crs ({exc.detail[:40]})") from exc
    x, y, z = [*point[:3], 0.0][:3]
    if len(point) >= 4:
        try:
            transformer, _ = get_transformer(src_crs, dst_crs, always_xy=False, allow_ballpark=allow_ballpark)
        except TransformationUnavailable as exc:
            raise _grid_skip(exc) from exc
        check_time(transformer, point, FWD)
    if authority_order_is_yx(src_crs):
        x, y = y, x  # geometries are stored x/y; reproject(always_xy=False) reads them back
    params = rp.ReprojectParams(
        source_crs=src, target_crs=dst, always_xy=False, allow_ballpark=allow_ballpark
    )
    gdf = gpd.GeoDataFrame(geometry=[shapely.Point(x, y, z)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = rp.reproject(gdf, params)
    except TransformationUnavailable as exc:
        raise _grid_skip(exc) from exc
    used = result.metadata["transformation"]
    if not used["best_available"] and not fallback_ok:
        raise _Skip("needs a grid")
    oracle = proj_choice(src_crs, dst_crs, (point[0], point[1], z), allow_ballpark)
    if oracle is not None and oracle != used["description"]:
        CHOICE_DIFFERENCES[f"{src} -> {dst}"] = (used["description"], oracle)
        raise _Skip("PROJ's per-point choice is another operation (see test_operation_choices)")
    got = shapely.get_coordinates(result.gdf.geometry.values, include_z=True)[0]
    radius = dst_crs.ellipsoid.semi_major_metre if dst_crs.ellipsoid else 6378137.0
    return got, bool(dst_crs.is_geographic), radius, authority_order_is_yx(dst_crs)


@cache
def _crs_to_crs(src: str, dst: str, allow_ballpark: bool) -> Transformer:
    return Transformer.from_crs(_crs(src), _crs(dst), allow_ballpark=allow_ballpark)


def _grid_skip(exc: TransformationUnavailable) -> Exception:
    """A missing grid is a skip; no transformation at all is the path's answer, to be compared."""
    return _Skip("needs a grid") if exc.extra.get("grids") else exc


CHOICE_DIFFERENCES: dict[str, tuple[str, str]] = {}


def proj_choice(src: CRS, dst: CRS, point: tuple[float, float, float], allow_ballpark: bool) -> str | None:
    """Return the operation proj_create_crs_to_crs (gie, cs2cs) uses at ``point``, if it tells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            transformer = _crs_to_crs(src.srs, dst.srs, allow_ballpark)
            transformer.transform(*point, errcheck=True)
            return transformer.get_last_used_operation().description
        except ProjError:
            return None


# --------------------------------------------------------------------------------------------------
# cs2cs
# --------------------------------------------------------------------------------------------------

_HARMLESS_ENV = {"PROJ_SKIP_READ_USER_WRITABLE_DIRECTORY", "PROJ_DISPLAY_PROGRAM_NAME", "PROJ_DEBUG"}


@dataclass
class _Cs2csCall:
    src: str
    dst: str
    inverse: bool = False
    echo: bool = False
    allow_ballpark: bool = True
    input_file: str | None = None


def parse_cs2cs_args(args: str, files: dict[str, str]) -> _Cs2csCall:
    """Parse the cs2cs command line; raise _Skip for options the reprojection path does not have."""
    tokens = shlex.split(args)
    inverse = echo = False
    allow_ballpark = True
    crs_tokens: list[str] = []
    input_file = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("-f", "-d"):
            i += 2  # output format only
            continue
        if token == "-I":
            inverse = True
        elif token == "-E":
            echo = True
        elif token == "--no-ballpark":
            allow_ballpark = False
        elif token.startswith("-") and number(token) is None:
            raise _Skip(f"unsupported cs2cs option {token.split('=')[0]}")
        elif token in files:
            input_file = token
        else:
            crs_tokens.append(token)
        i += 1
    if "+to" in crs_tokens:
        at = crs_tokens.index("+to")
        src, dst = " ".join(crs_tokens[:at]), " ".join(crs_tokens[at + 1 :])
    elif all(t.startswith("+") for t in crs_tokens):
        src = " ".join(crs_tokens)
        geodetic = _crs(src).geodetic_crs
        if geodetic is None:
            raise _Skip("single CRS without a geodetic CRS")
        dst = geodetic.to_wkt()
    elif len(crs_tokens) == 2:
        src, dst = crs_tokens
    else:
        raise _Skip("cannot split the cs2cs CRS arguments")
    if inverse:
        src, dst = dst, src
    return _Cs2csCall(src, dst, inverse, echo, allow_ballpark, input_file)


def _printed_tolerance(token: str) -> float:
    """Half a unit in the last printed place (cs2cs prints DMS to 0.001 arc second)."""
    if _DMS.match(token) and not re.fullmatch(r"[+-]?[\d.]+", token):
        return 0.0005 / 3600 + 1e-12
    decimals = len(token.split(".", 1)[1]) if "." in token else 0
    return 0.5 * 10.0**-decimals * (1 + 1e-9) + 1e-12


def run_cs2cs(path: Path) -> Tally:
    """Run every cs2cs test whose expectations are coordinates."""
    tally = Tally()
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for number_, test in enumerate(document["tests"], start=1):
        where = f"{path.name}#{number_} {test.get('comment', '')[:50]!r}".strip()
        expected_text = test.get("out", test.get("stdout"))
        files = {test["file"]["name"]: test["file"]["content"]} if "file" in test else {}
        try:
            unsupported_env = set(test.get("env") or {}) - _HARMLESS_ENV - {"PROJ_DATA"}
            if unsupported_env or "tmpdir" in test and not _grid_missing_scenario(test):
                raise _Skip("environment-dependent cs2cs test")
            if "proj.ini" in files:
                raise _Skip("environment-dependent cs2cs test")
            call = parse_cs2cs_args(str(test["args"]), files)
        except _Skip as skip:
            tally.add(where, "skipped", skip.reason)
            continue
        if expected_text is None:
            _expect_init_failure(tally, where, test, call)
            continue
        text = files[call.input_file] if call.input_file else str(test.get("in", ""))
        lines = [ln.lstrip("\ufeff") for ln in text.splitlines() if ln.strip()]
        outs = [ln for ln in str(expected_text).splitlines() if ln.strip()]
        if len(lines) != len(outs):
            tally.add(where, "skipped", "malformed: input and output line counts differ")
            continue
        for line_no, (line, out) in enumerate(zip(lines, outs, strict=True), start=1):
            _cs2cs_line(tally, f"{where} line {line_no}", call, line, out, _grid_missing_scenario(test))
    return tally


def _grid_missing_scenario(test: dict[str, Any]) -> bool:
    """Whether the test reproduces 'only proj.db, no grids' (as our installation is)."""
    return str((test.get("env") or {}).get("PROJ_DATA", "")) == "$tmpdir"


def _expect_init_failure(tally: Tally, where: str, test: dict[str, Any], call: _Cs2csCall) -> None:
    if not test.get("exitcode"):
        tally.add(where, "skipped", "no coordinates expected")
        return
    try:
        get_transformer(_crs(call.src), _crs(call.dst), always_xy=False, allow_ballpark=call.allow_ballpark)
    except TransformationUnavailable:
        tally.add(where, "passed")
        return
    tally.add(where, "failed", "cs2cs cannot initialise this transformation, but get_transformer could")


def _cs2cs_promotes(src: str, dst: str) -> bool:
    """cs2cs makes a 2D CRS 3D when the other one has heights; the reprojection path does not."""
    try:
        dims = {len(_crs(src).axis_info), len(_crs(dst).axis_info)}
    except UnknownCRS:
        return False
    return dims == {2, 3} and (_crs(src).is_compound or _crs(dst).is_compound)


def _cs2cs_line(tally: Tally, where: str, call: _Cs2csCall, line: str, out: str, fallback_ok: bool) -> None:
    point = numbers(line)
    if len(point) < 2:
        tally.add(where, "skipped", "malformed: input line without a coordinate")
        return
    tokens = out.split()
    if call.echo:  # cs2cs echoes x y z as typed; a t value goes after the result
        tokens = tokens[min(len(point), 3) :]
    if _cs2cs_promotes(call.src, call.dst):
        tally.add(where, "skipped", "cs2cs promotes a 2D CRS to 3D (reproject keeps the CRS as given)")
        return
    try:
        got, *_ = transform_crs_pair(
            call.src, call.dst, point, allow_ballpark=call.allow_ballpark, fallback_ok=fallback_ok
        )
    except _Skip as skip:
        tally.add(where, "skipped", skip.reason)
        return
    except AnalysisInputError:
        failed_ok = tokens[:1] == ["*"]
        tally.add(where, "passed" if failed_ok else "failed", "" if failed_ok else f"failed, expected {out!r}")
        return
    if tokens[:1] == ["*"]:
        tally.add(where, "failed", f"got {got.tolist()}, expected failure")
        return
    expected = [number(t) for t in tokens[:3]]
    if len(expected) < 3 or any(v is None for v in expected):
        tally.add(where, "failed", f"cannot read expected output {out!r}")
        return
    off = [abs(g - e) - _printed_tolerance(t) for g, e, t in zip(got, expected, tokens, strict=False)]
    if all(o <= 0 for o in off):
        tally.add(where, "passed")
    else:
        tally.add(where, "failed", f"got {got.tolist()}, expected {out!r}")


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


@cache
def gie_tally(relative: str) -> Tally:
    return GieRunner(VECTORS / relative).run()


@cache
def cs2cs_tally() -> Tally:
    return run_cs2cs(CS2CS_FILE)


def _report(title: str, tally: Tally) -> str:
    counts = tally.counts()
    lines = [f"{title}: ran {counts['ran']}, passed {counts['passed']}, failed {counts['failed']}"]
    lines += [f"    {key}: {value}" for key, value in sorted(counts.items()) if key.startswith("skipped")]
    return "\n".join(lines)


def _failure_message(tally: Tally, limit: int = 30) -> str:
    shown = "\n".join(f"  {f.where}: {f.reason}" for f in tally.failures[:limit])
    return f"{len(tally.failures)} PROJ vector(s) failed:\n{shown}"


@pytest.mark.parametrize("path", GIE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_gie_vectors(path: Path) -> None:
    tally = gie_tally(str(path.relative_to(VECTORS)))
    print(_report(path.name, tally))
    assert not tally.failures, _failure_message(tally)
    if not path.name.endswith(".failing"):
        assert tally.counts()["passed"] > 0, f"no case of {path.name} ran"


def test_cs2cs_vectors() -> None:
    tally = cs2cs_tally()
    print(_report(CS2CS_FILE.name, tally))
    assert not tally.failures, _failure_message(tally)
    assert tally.counts()["passed"] >= 100


def test_operation_choices() -> None:
    """List where reproject chose another operation than PROJ's per-point choice (cs2cs/gie).

    reproject ranks operations for the data's area and avoids ballpark offsets; proj_create_crs_to_crs
    takes, for each point, the first operation of PROJ's global ranking whose area contains it, and
    when grids are missing it also tries intermediate CRSs. Each difference below was reviewed.
    """
    for path in GIE_FILES:
        gie_tally(str(path.relative_to(VECTORS)))
    cs2cs_tally()
    report = "\n".join(
        f"  {pair}: reproject {ours!r}, PROJ {theirs!r}" for pair, (ours, theirs) in sorted(CHOICE_DIFFERENCES.items())
    )
    print(f"{len(CHOICE_DIFFERENCES)} CRS pair(s) with another operation than PROJ's choice:\n{report}")
    assert set(CHOICE_DIFFERENCES) == set(KNOWN_CHOICE_DIFFERENCES), report


#: Reviewed differences between reproject's choice and PROJ's per-point choice, and why.
KNOWN_CHOICE_DIFFERENCES = {
    "+proj=longlat +datum=WGS84 -> +proj=utm +zone=32 +datum=carthage": (
        "ranked for the data's area, 'Carthage to WGS 84 (2)' (1 m) comes before '(1)' (14 m), which is "
        "first in PROJ's global order and is what the +datum=carthage test expects"
    ),
    "EPSG:4746 -> EPSG:4978": (
        "the 'outside BETA2007' point (49N 2E) is outside every PD/83 operation's area: PROJ extrapolates "
        "the Thuringian Helmert to France, reproject (choosing for the data's area) uses a ballpark offset"
    ),
    "EPSG:4978 -> EPSG:4746": "the same, inverse",
    "EPSG:3912+EPSG:5779 -> EPSG:3794+EPSG:8690": (
        "compound CRSs with only a ballpark vertical link: TransformerGroup offers 'MGI 1901 to Slovenia "
        "1996' Helmerts with it, proj_create_crs_to_crs the grid-free 'D48/GK to D96/TM (10)' affine"
    ),
}


def test_vector_totals(capsys: pytest.CaptureFixture[str]) -> None:
    """Print the totals by reason, and make sure most vectors really run."""
    total = Tally()
    for path in GIE_FILES:
        total.outcomes += gie_tally(str(path.relative_to(VECTORS))).outcomes
    total.outcomes += cs2cs_tally().outcomes
    with capsys.disabled():
        print("\n" + _report("PROJ vectors (all files)", total))
    counts = total.counts()
    assert counts["failed"] == 0
    assert counts["ran"] >= 2500, counts


# -- the runner must be able to fail ---------------------------------------------------------------


def _swap_axes(coords: np.ndarray, transformer: Transformer, **kwargs: Any) -> np.ndarray:
    out = _REAL_TRANSFORM(coords, transformer, **kwargs)
    out[:, [0, 1]] = out[:, [1, 0]]
    return out


def _nudge(coords: np.ndarray, transformer: Transformer, **kwargs: Any) -> np.ndarray:
    out = _REAL_TRANSFORM(coords, transformer, **kwargs)
    out[:, 1] += np.where(np.abs(out[:, 1]) > 1000, 0.1, 1e-6)  # 10 cm, or ~11 cm in degrees
    return out


_REAL_TRANSFORM = rp.transform_coordinates
_SAMPLE = ["gie/epsg_no_grid.gie", "gigs/5101.1-jhs.gie", "gigs/5201.gie", "gigs/5208.gie"]


@pytest.mark.parametrize("broken", [_swap_axes, _nudge], ids=["axis swap", "10 cm error"])
def test_runner_catches_a_broken_transform(monkeypatch: pytest.MonkeyPatch, broken: Callable[..., Any]) -> None:
    monkeypatch.setattr(rp, "transform_coordinates", broken)
    tallies = [GieRunner(VECTORS / name).run() for name in _SAMPLE] + [run_cs2cs(CS2CS_FILE)]
    for name, tally in zip([*_SAMPLE, CS2CS_FILE.name], tallies, strict=True):
        counts = tally.counts()
        assert counts["failed"] >= counts["ran"] * 0.5, f"{name}: a broken transform passed: {counts}"
