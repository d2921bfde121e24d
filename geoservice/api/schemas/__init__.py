"""API schemas (XCreate / XRead / Page[XRead])."""
