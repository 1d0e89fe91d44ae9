"""Models, errors and constants shared by every component (imports no component)."""
