"""Flask's signals, on blinker.

Flask-compatible: ``flask.signals``. carboy sends a signal only when it has receivers
(``signal.receivers`` is checked first), so an app that connects none pays nothing for them.

The six signals sent around every request keep their receivers in a dict that reports each
change, so :data:`_quiet` says in one read whether any of them has a receiver: the bare path
(:mod:`carboy.bare`) reads it instead of six ``receivers`` dicts.
"""

from __future__ import annotations

from blinker import NamedSignal, Namespace

from .watched import WatchedDict

_signals = Namespace()

template_rendered = _signals.signal("template-rendered")
before_render_template = _signals.signal("before-render-template")
got_request_exception = _signals.signal("got-request-exception")
message_flashed = _signals.signal("message-flashed")

#: Whether no receiver is connected to any of the signals a request sends around its view
#: (:data:`_REQUEST_SIGNALS`). Kept current by their receiver maps, whatever connects or
#: disconnects (``connect``, ``disconnect``, a weak receiver's death, blinker's own clearing).
_quiet = True


def _recount() -> None:
    global _quiet
    _quiet = not any(signal.receivers for signal in _REQUEST_SIGNALS)


def _request_signal(name: str) -> NamedSignal:
    signal = _signals.signal(name)
    signal.receivers = WatchedDict(_recount)
    return signal


request_started = _request_signal("request-started")
request_finished = _request_signal("request-finished")
request_tearing_down = _request_signal("request-tearing-down")
appcontext_tearing_down = _request_signal("appcontext-tearing-down")
appcontext_pushed = _request_signal("appcontext-pushed")
appcontext_popped = _request_signal("appcontext-popped")
_REQUEST_SIGNALS = (
    request_started,
    request_finished,
    request_tearing_down,
    appcontext_tearing_down,
    appcontext_pushed,
    appcontext_popped,
)
