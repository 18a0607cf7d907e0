"""Tagging a catalog: sources (listing), fingerprints (hashing), planning, windows, the decode pool, scoring,
the catalog store, its rows, commits, a run's summary, the one tagging step list (run; its state run_state,
its scan steps scan, the step engine steps), export, shadow runs and the review loop.

Imports: everything below it (core ... registry); never cli."""
