"""The live feed: a note shared with everyone appears on every signed-in user's open page.

Notes are private to their author; a note marked *public* when it is written (the "Share the
title with everyone" box, or ``"public": true`` in the JSON API) is announced on the
``public-notes`` channel of :mod:`carboy.scale.broadcast`, with its id, title, author and
time, never its body. Private notes are never published. Each signed-in user's notes page
opens ``GET /api/live`` (Server-Sent Events, :meth:`~carboy.scale.broadcast.Broadcast.sse`)
with a few lines of plain JavaScript (``EventSource``) that add each announced title to the
``#live-notes`` list as text (``textContent``), so a title is never read as HTML.

The backend is the broadcast module's default: in process (``memory``) with one worker, which
is all README's first command runs; Redis Streams when ``REDIS_URL`` is set, so a note created
through any worker or host reaches the pages held open on all of them, and a browser that
reconnects (to any worker) resumes after the last event it got (``Last-Event-ID``).

Under a WSGI server each open page holds a worker thread for as long as it stays open; serve
the app with an ASGI server (``uvicorn --factory examples.notes:create_app``) for many.
"""

from __future__ import annotations

import logging
import typing as t

from carboy.scale.broadcast import Broadcast

if t.TYPE_CHECKING:
    from carboy import Carboy

log = logging.getLogger(__name__)

#: The app's broadcast (``memory`` by default, Redis Streams with ``REDIS_URL``).
broadcast = Broadcast()

#: The channel that carries the public notes.
CHANNEL = "public-notes"


def public_note_event(note: t.Mapping[str, t.Any], author: str) -> dict[str, t.Any]:
    """What others may see of a public note: no body, no owner id."""
    return {
        "id": note["id"],
        "title": note["title"],
        "author": author,
        "created_at": note["created_at"],
    }


def announce(note: t.Mapping[str, t.Any], author: str) -> None:
    """Publish *note* (written and committed already) to the open pages, if it is public.

    A private note is never published. If the broadcast backend cannot take it (Redis down),
    the note stays saved and the failure is logged: the feed misses it until the pages reload.
    """
    if not note["public"]:
        return
    try:
        broadcast.publish(CHANNEL, public_note_event(note, author))
    except Exception:  # redis.RedisError, without importing redis-py when it is not used
        log.warning("The public note %s was saved but not announced live.", note["id"])


def init_app(app: Carboy) -> None:
    """Set up the broadcast (``BROADCAST_*`` config keys, ``REDIS_URL``)."""
    broadcast.init_app(app)
