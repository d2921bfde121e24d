"""SuperMap iServer payload shapes (see shared/reference/supermap-rest.md)."""
