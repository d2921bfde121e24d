"""Database layer: models, engine, repositories and the bulk GIS I/O paths."""
