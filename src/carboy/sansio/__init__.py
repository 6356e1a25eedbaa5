"""The parts of carboy that do no request I/O. Flask-compatible: ``flask.sansio``."""
