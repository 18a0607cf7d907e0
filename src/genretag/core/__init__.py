"""Foundations every other subpackage may use: params (config), errors, atomic writes, paths,
environment, child processes, fault injection and MLflow URIs.

Imports: the standard library and third-party packages only; never another genretag subpackage."""
