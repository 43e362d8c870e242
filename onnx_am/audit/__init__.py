"""The audit: ``analyze`` and ``inspect`` as the command line runs them, the report directory
and its rendering (images, plots, HTML)."""
