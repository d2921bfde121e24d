"""Celery side of geoservice: the worker app and the thin task shells around geoservice.analysis."""
