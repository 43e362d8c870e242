"""Graph passes over the imported torch graph."""
