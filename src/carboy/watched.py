"""Registries that tell the app when they change.

carboy gathers each endpoint's hooks once (its *plan*) instead of reading the registries on
every request. Flask reads them every time, and some extensions rely on that by editing them
while the app serves: Flask-Caching appends to ``app.after_request_funcs[None]`` from inside a
view. The app's hook registries and ``view_functions`` are therefore these dict and list
subclasses, which call the app back on any change so it drops its plans. Reading them costs
what reading a plain dict or list costs; only writes do more.

.. versionadded:: 0.1
"""

from __future__ import annotations

import typing as t

K = t.TypeVar("K")
V = t.TypeVar("V")


class WatchedList(list[V]):
    """A list that calls *changed* after every change made through its methods."""

    __slots__ = ("_changed",)

    def __init__(self, changed: t.Callable[[], None], items: t.Iterable[V] = ()) -> None:
        super().__init__(items)
        self._changed = changed


def _notify(name: str) -> t.Any:
    method = getattr(list, name)

    def changing(self: WatchedList[t.Any], *args: t.Any) -> t.Any:
        result = method(self, *args)
        self._changed()
        return result if name != "__iadd__" else self

    changing.__name__ = name
    return changing


for _name in (
    "append",
    "extend",
    "insert",
    "remove",
    "pop",
    "clear",
    "sort",
    "reverse",
    "__setitem__",
    "__delitem__",
    "__iadd__",
):
    setattr(WatchedList, _name, _notify(_name))


class WatchedDict(dict[K, V]):
    """A dict that calls *changed* after every change; with *lists*, its values are
    :class:`WatchedList` (made on first access to a missing key, like ``defaultdict(list)``).
    """

    __slots__ = ("_changed", "_lists")

    def __init__(self, changed: t.Callable[[], None], lists: bool = False) -> None:
        super().__init__()
        self._changed = changed
        self._lists = lists

    def _wrap(self, value: t.Any) -> t.Any:
        if self._lists and not isinstance(value, WatchedList):
            return WatchedList(self._changed, value or ())
        return value

    def __missing__(self, key: K) -> V:
        if not self._lists:
            raise KeyError(key)
        value: t.Any = WatchedList(self._changed)
        dict.__setitem__(self, key, value)
        return t.cast(V, value)

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, self._wrap(value))
        self._changed()

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self._changed()

    def setdefault(self, key: K, default: t.Any = None) -> V:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args: t.Any, **kwargs: t.Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            super().__setitem__(key, self._wrap(value))
        self._changed()

    def pop(self, key: K, *default: t.Any) -> t.Any:
        value = super().pop(key, *default)
        self._changed()
        return value

    def popitem(self) -> tuple[K, V]:
        item = super().popitem()
        self._changed()
        return item

    def clear(self) -> None:
        super().clear()
        self._changed()
