"""The application's configuration mapping and the descriptor that exposes keys as attributes.

Flask-compatible: ``flask.config``. :class:`Config` is a plain :class:`dict` with loaders for
Python files, objects, data files (JSON, TOML, ...), mappings and environment variables. Every
loader only takes UPPERCASE keys, so helpers and imports inside a config file are ignored.
"""

from __future__ import annotations

import errno
import json
import os
import types
import typing as t
from datetime import timedelta

from werkzeug.utils import import_string

if t.TYPE_CHECKING:
    from _typeshed import SupportsRead

__all__ = ["DEFAULT_CONFIG", "Config", "ConfigAttribute"]

#: The keys and values every application starts with (Flask 3.1's ``Flask.default_config``).
DEFAULT_CONFIG: dict[str, t.Any] = {
    "DEBUG": None,
    "TESTING": False,
    "PROPAGATE_EXCEPTIONS": None,
    "SECRET_KEY": None,
    "SECRET_KEY_FALLBACKS": None,
    "PERMANENT_SESSION_LIFETIME": timedelta(days=31),
    "USE_X_SENDFILE": False,
    "TRUSTED_HOSTS": None,
    "SERVER_NAME": None,
    "APPLICATION_ROOT": "/",
    "SESSION_COOKIE_NAME": "session",
    "SESSION_COOKIE_DOMAIN": None,
    "SESSION_COOKIE_PATH": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SECURE": False,
    "SESSION_COOKIE_PARTITIONED": False,
    "SESSION_COOKIE_SAMESITE": None,
    "SESSION_REFRESH_EACH_REQUEST": True,
    "MAX_CONTENT_LENGTH": None,
    "MAX_FORM_MEMORY_SIZE": 500_000,
    "MAX_FORM_PARTS": 1_000,
    "SEND_FILE_MAX_AGE_DEFAULT": None,
    "TRAP_BAD_REQUEST_ERRORS": None,
    "TRAP_HTTP_EXCEPTIONS": False,
    "EXPLAIN_TEMPLATE_LOADING": False,
    "PREFERRED_URL_SCHEME": "http",
    "TEMPLATES_AUTO_RELOAD": None,
    "MAX_COOKIE_SIZE": 4093,
    "PROVIDE_AUTOMATIC_OPTIONS": True,
}

#: Prefix that :meth:`Config.from_prefixed_env` also reads when called with the default prefix.
_CARBOY_PREFIX = "CARBOY"

#: ``errno`` values that ``silent=True`` turns into a ``False`` return instead of an error.
_MISSING_FILE_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR})

T = t.TypeVar("T")


class ConfigAttribute(t.Generic[T]):
    """Expose ``obj.config[name]`` as an attribute of the class it is assigned to.

    Flask-compatible: ``flask.config.ConfigAttribute``. Reading on the class returns the
    descriptor itself; reading on an instance returns the config value, passed through
    *get_converter* when given. Assigning writes the config key unchanged.

    :param name: the config key (``str``).
    :param get_converter: optional callable applied to the value on read.
    :raises KeyError: on read, when the key is absent from the config.
    """

    def __init__(self, name: str, get_converter: t.Callable[[t.Any], T] | None = None) -> None:
        self.__name__ = name
        self.get_converter = get_converter

    @t.overload
    def __get__(self, obj: None, owner: type[t.Any] | None = None) -> t.Self: ...

    @t.overload
    def __get__(self, obj: object, owner: type[t.Any] | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type[t.Any] | None = None) -> T | t.Self:
        if obj is None:
            return self
        value = obj.config[self.__name__]  # type: ignore[attr-defined]
        if self.get_converter is None:
            return value  # type: ignore[no-any-return]
        return self.get_converter(value)

    def __set__(self, obj: object, value: t.Any) -> None:
        obj.config[self.__name__] = value  # type: ignore[attr-defined]


class Config(dict[str, t.Any]):
    """A :class:`dict` of settings with loaders for files, objects and the environment.

    Flask-compatible: ``flask.Config``. Relative file names given to :meth:`from_pyfile` and
    :meth:`from_file` are resolved against *root_path* (usually the app's root path).

    :param root_path: directory that relative file names are joined to (``str`` or path-like).
    :param defaults: optional mapping copied into the new config.
    """

    def __init__(
        self,
        root_path: str | os.PathLike[str],
        defaults: dict[str, t.Any] | None = None,
    ) -> None:
        super().__init__(defaults or {})
        self.root_path = root_path

    def from_envvar(self, variable_name: str, silent: bool = False) -> bool:
        """Load the Python config file named by environment variable *variable_name*.

        Flask-compatible: ``flask.Config.from_envvar``. Shortcut for
        ``from_pyfile(os.environ[variable_name])``.

        :param variable_name: name of the environment variable (``str``).
        :param silent: return ``False`` instead of raising when the variable is unset or empty,
            or the file it names does not exist.
        :return: ``True`` when a file was loaded.
        :raises RuntimeError: the variable is unset or empty and *silent* is false.
        :raises OSError: the file cannot be read (see :meth:`from_pyfile`).
        """
        path = os.environ.get(variable_name)
        if not path:
            if silent:
                return False
            raise RuntimeError(
                f"The environment variable {variable_name!r} is not set, so no configuration"
                " file could be loaded from it. Set this variable to the path of a"
                " configuration file."
            )
        return self.from_pyfile(path, silent=silent)

    def from_prefixed_env(
        self,
        prefix: str = "FLASK",
        *,
        loads: t.Callable[[str], t.Any] = json.loads,
    ) -> bool:
        """Load environment variables that start with ``{prefix}_`` into the config.

        Flask-compatible: ``flask.Config.from_prefixed_env``. The prefix is stripped from each
        variable's name; its value goes through *loads* and is kept as a string when *loads*
        raises. Variables are applied in sorted name order. A name containing ``__`` sets a
        nested key: ``FLASK_DB__HOST`` sets ``config["DB"]["HOST"]``, creating intermediate
        dicts as needed.

        With the default prefix ``"FLASK"``, carboy additionally reads ``CARBOY_`` variables
        after the ``FLASK_`` ones, so a ``CARBOY_`` value wins over the ``FLASK_`` value of the
        same key.

        :param prefix: variable name prefix without the trailing underscore (``str``).
        :param loads: callable turning each value string into a Python value.
        :return: always ``True``.
        :raises TypeError: an intermediate key of a nested name holds a non-mapping value.
        """
        prefixes = [prefix]
        if prefix == "FLASK":
            prefixes.append(_CARBOY_PREFIX)
        for one_prefix in prefixes:
            self._load_prefixed_env(f"{one_prefix}_", loads)
        return True

    def _load_prefixed_env(self, prefix: str, loads: t.Callable[[str], t.Any]) -> None:
        for name in sorted(os.environ):
            if not name.startswith(prefix):
                continue
            raw = os.environ[name]
            try:
                value = loads(raw)
            except Exception:
                value = raw
            key = name[len(prefix) :]
            *parents, leaf = key.split("__")
            target: t.Any = self
            for part in parents:
                if part not in target:
                    target[part] = {}
                target = target[part]
            target[leaf] = value

    def from_pyfile(self, filename: str | os.PathLike[str], silent: bool = False) -> bool:
        """Execute a Python file and load its UPPERCASE globals.

        Flask-compatible: ``flask.Config.from_pyfile``.

        :param filename: path of the file; relative paths are joined to ``root_path``.
        :param silent: return ``False`` instead of raising when the file does not exist
            (or is a directory).
        :return: ``True`` when the file was loaded.
        :raises OSError: the file cannot be read; ``strerror`` starts with
            ``"Unable to load configuration file"``.
        """
        path = os.path.join(self.root_path, filename)
        module = types.ModuleType("config")
        module.__file__ = path
        try:
            with open(path, "rb") as fh:
                source = fh.read()
        except OSError as e:
            if silent and e.errno in _MISSING_FILE_ERRNOS:
                return False
            e.strerror = f"Unable to load configuration file ({e.strerror})"
            raise
        exec(compile(source, path, "exec"), module.__dict__)
        self.from_object(module)
        return True

    def from_object(self, obj: object | str) -> None:
        """Copy the UPPERCASE attributes of *obj* into the config.

        Flask-compatible: ``flask.Config.from_object``. *obj* may be a module, a class, an
        instance, or an import string such as ``"myapp.settings.Production"``; class properties
        are only evaluated when an instance is given.

        :param obj: object to read, or a dotted import path (``str``).
        :raises ImportError: the import string cannot be resolved
            (:class:`werkzeug.utils.ImportStringError`).
        """
        if isinstance(obj, str):
            obj = import_string(obj)
        for key in dir(obj):
            if key.isupper():
                self[key] = getattr(obj, key)

    def from_file(
        self,
        filename: str | os.PathLike[str],
        load: t.Callable[[SupportsRead[str] | SupportsRead[bytes]], t.Mapping[str, t.Any]],
        silent: bool = False,
        text: bool = True,
    ) -> bool:
        """Load a data file with *load* and copy its UPPERCASE top-level keys.

        Flask-compatible: ``flask.Config.from_file``. For example
        ``config.from_file("config.json", load=json.load)`` or, with :mod:`tomllib`,
        ``config.from_file("config.toml", load=tomllib.load, text=False)``.

        :param filename: path of the file; relative paths are joined to ``root_path``.
        :param load: callable taking an open file and returning a mapping.
        :param silent: return ``False`` instead of raising when the file does not exist.
        :param text: open the file in text mode (``True``) or binary mode (``False``).
        :return: ``True`` when the file was loaded.
        :raises OSError: the file cannot be read; ``strerror`` starts with
            ``"Unable to load configuration file"``.
        """
        path = os.path.join(self.root_path, filename)
        try:
            with open(path, "r" if text else "rb") as fh:
                data = load(fh)
        except OSError as e:
            if silent and e.errno in _MISSING_FILE_ERRNOS:
                return False
            e.strerror = f"Unable to load configuration file ({e.strerror})"
            raise
        return self.from_mapping(data)

    def from_mapping(self, mapping: t.Mapping[str, t.Any] | None = None, **kwargs: t.Any) -> bool:
        """Copy the UPPERCASE keys of *mapping* and of the keyword arguments.

        Flask-compatible: ``flask.Config.from_mapping``. Keyword arguments win over *mapping*.

        :param mapping: optional mapping of settings.
        :return: always ``True``.
        """
        merged: dict[str, t.Any] = {}
        if mapping is not None:
            merged.update(mapping)
        merged.update(kwargs)
        for key, value in merged.items():
            if key.isupper():
                self[key] = value
        return True

    def get_namespace(
        self, namespace: str, lowercase: bool = True, trim_namespace: bool = True
    ) -> dict[str, t.Any]:
        """Return the settings whose key starts with *namespace* as a new dict.

        Flask-compatible: ``flask.Config.get_namespace``. With ``IMAGE_STORE_PATH`` set,
        ``get_namespace("IMAGE_STORE_")`` returns ``{"path": ...}``.

        :param namespace: key prefix to select (``str``), usually ending in ``_``.
        :param lowercase: lowercase the returned keys.
        :param trim_namespace: remove *namespace* from the returned keys.
        :return: a new ``dict``; values are not copied.
        """
        found: dict[str, t.Any] = {}
        for key, value in self.items():
            if not key.startswith(namespace):
                continue
            out_key = key[len(namespace) :] if trim_namespace else key
            if lowercase:
                out_key = out_key.lower()
            found[out_key] = value
        return found

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {dict.__repr__(self)}>"
