"""The file and format layer: uploads and JSON bodies in, streamed exports out.

``readers`` turns a parsed GeoJSON body or an uploaded file (GeoJSON, GeoJSON text sequence, GeoPackage,
zipped Shapefile, CSV, FlatGeobuf) into a GeoDataFrame with its CRS, or raises a ``GeoserviceError``
naming the feature, field and problem. ``writers`` streams a dataset out batch by batch as GeoJSON /
GeoJSON text sequence, or writes GeoPackage, zipped Shapefile and FlatGeobuf files with bounded memory.

Geometry *validity* (self-intersections, latitude range, mixed types, repair) is checked afterwards by
``geoservice.analysis.validation.validate_geometries``; the readers only check what would otherwise be
lost or silently changed while parsing (unclosed rings, short rings, non-numeric or non-finite numbers).
This package does file I/O and therefore lives outside the pure ``geoservice.analysis`` core.
"""
