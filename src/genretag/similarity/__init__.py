"""Similar tracks: the nearest catalog tracks by one model version's track embeddings (cosine).

- :mod:`~genretag.similarity.embeddings`: one model version's track embeddings read from catalog_tags
  (never a mix of versions), in chunks;
- :mod:`~genretag.similarity.index`: the usearch HNSW index of a model version, stored beside the catalog
  (``<catalog>.index/<model_version>.usearch`` + a JSON manifest), updated incrementally after each
  tagging run, detected and rebuilt when it no longer matches the catalog;
- :mod:`~genretag.similarity.search`: :func:`~genretag.similarity.search.similar`, the Python API of
  ``genretag similar``: exact (numpy) search below ``similar.exact_below`` embeddings, the index above.

Sits with tagging (tests/code/test_layers.py): it reads tagging's catalog store, and tagging's step list
runs its index update at the end of every tagging run. Imports: core ... tagging; never cli.
"""
