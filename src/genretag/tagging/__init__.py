"""Tagging a catalog: sources (scan, hash, plan), windows, the decode pool, scoring, the catalog store,
its rows, commits, a run's summary, the one tagging step list (run), export, shadow runs and the review loop.

Imports: everything below it (core ... registry); never cli."""
