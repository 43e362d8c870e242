"""Rendering of reports: images, plots, HTML."""
