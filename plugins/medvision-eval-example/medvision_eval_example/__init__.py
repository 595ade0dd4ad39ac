"""Example medvision-eval plugin package."""
