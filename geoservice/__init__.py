"""geoservice: geospatial analysis processing service on PostGIS, Celery and Shapely."""

__version__ = "0.1.0"
