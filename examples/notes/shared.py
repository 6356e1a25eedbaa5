"""What the workers of a server share: sessions, a cached page and the login rate limit.

With ``REDIS_URL`` set (``CARBOY_REDIS_URL`` in the environment) all three live in Redis,
through carboy's scale-out modules, so every worker process and host sees the same state:

* sessions are server-side (:mod:`carboy.scale.sessions`, ``SESSION_TYPE = "redis"``), and a
  login gives the session a new id (:meth:`~carboy.scale.sessions.RedisSession.regenerate`),
  so an id planted before the login never authenticates;
* ``GET /api/stats`` (public totals, the same for everyone) is cached for
  :data:`STATS_SECONDS` (:mod:`carboy.scale.caching`), computed once for all workers, and
  forgotten whenever an account or a note is added or removed;
* ``POST /login`` is limited to ``LOGIN_RATE_LIMIT`` per client address
  (:mod:`carboy.scale.limiter`), counted exactly across workers.

Without it the same code runs on the embedded defaults, with nothing else installed beyond
carboy: the signed-cookie session, an in-process cache (one per worker) and in-memory limit
counts (one per worker). redis-py is not imported then.
"""

from __future__ import annotations

import typing as t

from carboy import session
from carboy.scale.caching import Cache

if t.TYPE_CHECKING:
    from carboy import Carboy

#: The app's cache (in-process, or Redis when ``REDIS_URL`` is set).
cache = Cache()

#: The cache key of the public totals served by ``GET /api/stats``.
STATS_KEY = "notes/stats"
#: Seconds the totals are served from the cache at most (they are also forgotten on writes).
STATS_SECONDS = 60

#: The ``app.extensions`` key of the app's :class:`~carboy.scale.limiter.Limiter`.
LIMITER_KEY = "notes.limiter"


def stats_changed() -> None:
    """Forget the cached totals: an account or a note was added or removed."""
    cache.delete(STATS_KEY)


def regenerate_session() -> None:
    """Give the session a new id, if the session interface supports it (server-side sessions
    do; the signed-cookie session needs nothing: its cookie changes with its content)."""
    regenerate = getattr(session, "regenerate", None)
    if regenerate is not None:
        regenerate()


def _limit_logins(app: Carboy, login_view: t.Callable[..., t.Any]) -> None:
    from carboy.scale.limiter import Limiter, get_remote_address

    limiter = Limiter(get_remote_address, app=app)
    limiter.limit(
        app.config["LOGIN_RATE_LIMIT"],
        methods=["POST"],
        error_message="Too many login attempts from your address.",
    )(login_view)
    app.extensions[LIMITER_KEY] = limiter


def init_app(app: Carboy, login_view: t.Callable[..., t.Any]) -> None:
    """Set up the session, the cache and the rate limit of *login_view* for *app*.

    The session becomes server-side only when ``REDIS_URL`` is set (``SESSION_TYPE`` defaults
    to ``"redis"`` then); the cache and the limiter pick Redis or their in-process default
    from the same key by themselves.
    """
    if app.config.get("REDIS_URL"):
        app.config.setdefault("SESSION_TYPE", "redis")
        from carboy.scale.sessions import Session

        Session(app)
    cache.init_app(app)
    _limit_logins(app, login_view)
