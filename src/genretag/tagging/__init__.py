"""Tagging a catalog: the scoring session, the catalog database, the run's steps, shadow runs and the review loop.

Imports: everything below it (core ... registry); never cli."""
