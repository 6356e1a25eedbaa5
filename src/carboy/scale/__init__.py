"""The scale-out layer: what many workers and hosts share, on real engines.

Nothing in carboy's core imports this package, and importing it imports no engine's client:
each module (:mod:`carboy.scale.connection`, ...) imports redis-py or SQLAlchemy itself, so an
app that uses none of them pays nothing for them. Each is an extension object with
``init_app``, plugged in through Flask's public extension points, its state in
``app.extensions``.

.. versionadded:: 0.1
"""
