"""The ``pose3d`` command line: ``main`` dispatches to one module per command.

May import: everything; nothing imports it.
"""
