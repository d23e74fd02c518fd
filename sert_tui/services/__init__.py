"""App services: the work the app does for a person beside the screens (no widgets here)."""
