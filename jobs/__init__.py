"""Dagster jobs: thin wrappers that translate run context into calls on vigil/."""
