"""Analysis plugins used by the end-to-end tests (loaded through GEOSERVICE_ANALYSIS_PLUGINS)."""
