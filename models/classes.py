"""Moved to common/classes.py (the app and the server both speak these names). This re-export keeps code
written against the old place working while it moves; import from common.classes."""
from common.classes import CLASS_SETS, ESC50_CLASSES, resolve_class_set  # noqa: F401
