"""Config loading: defaults, objects, files, environment variables, namespaces, descriptors."""

from __future__ import annotations

import errno
import json
import sys
import textwrap
import tomllib
import types
import typing as t
from datetime import timedelta
from pathlib import Path

import flask
import pytest
from werkzeug.utils import ImportStringError

from carboy.config import DEFAULT_CONFIG, Config, ConfigAttribute


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove FLASK_/CARBOY_/MYAPP_ variables so each test controls them."""
    import os

    for name in list(os.environ):
        if name.startswith(("FLASK_", "CARBOY_", "MYAPP_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_default_config_matches_flask() -> None:
    assert dict(flask.Flask.default_config) == DEFAULT_CONFIG
    assert list(DEFAULT_CONFIG) == list(flask.Flask.default_config)
    assert DEFAULT_CONFIG["PERMANENT_SESSION_LIFETIME"] == timedelta(days=31)
    assert DEFAULT_CONFIG["MAX_COOKIE_SIZE"] == 4093


def test_init_copies_defaults() -> None:
    defaults = {"A": 1}
    config = Config("/root", defaults)
    config["A"] = 2
    assert defaults == {"A": 1}
    assert config.root_path == "/root"
    assert Config("/root") == {}


def test_repr() -> None:
    assert repr(Config(".", {"A": 1})) == "<Config {'A': 1}>"

    class Sub(Config):
        pass

    assert repr(Sub(".")) == "<Sub {}>"


class _Settings:
    DEBUG = True
    SECRET_KEY = "abc"
    lower = "ignored"
    _PRIVATE_lower = "ignored too"

    @property
    def COMPUTED(self) -> str:
        return "from-property"


def test_from_object_class_and_instance() -> None:
    config = Config(".")
    config.from_object(_Settings)
    assert config["DEBUG"] is True
    assert config["SECRET_KEY"] == "abc"
    assert "lower" not in config
    assert "_PRIVATE_lower" not in config
    assert isinstance(config["COMPUTED"], property)

    config = Config(".")
    config.from_object(_Settings())
    assert config["COMPUTED"] == "from-property"


def test_from_object_import_string(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("carboy_test_settings")
    module.TESTING = True  # type: ignore[attr-defined]
    module.helper = 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "carboy_test_settings", module)
    config = Config(".")
    config.from_object("carboy_test_settings")
    assert config == {"TESTING": True}


def test_from_object_bad_import_string() -> None:
    with pytest.raises(ImportStringError):
        Config(".").from_object("carboy_no_such_module_xyz.Settings")


def test_from_pyfile(tmp_path: Path) -> None:
    (tmp_path / "settings.py").write_text(
        textwrap.dedent(
            """
            import os
            SECRET_KEY = "s3"
            ITEMS = [1, 2]
            helper = "lower"
            HERE = __file__
            """
        )
    )
    config = Config(tmp_path)
    assert config.from_pyfile("settings.py") is True
    assert config["SECRET_KEY"] == "s3"
    assert config["ITEMS"] == [1, 2]
    assert "helper" not in config
    assert "os" not in config
    assert config["HERE"] == str(tmp_path / "settings.py")


def test_from_pyfile_absolute_path_ignores_root(tmp_path: Path) -> None:
    path = tmp_path / "abs.py"
    path.write_text("X_VALUE = 5\n")
    config = Config("/nonexistent-root")
    assert config.from_pyfile(str(path))
    assert config["X_VALUE"] == 5


def test_from_pyfile_missing_file(tmp_path: Path) -> None:
    config = Config(tmp_path)
    with pytest.raises(OSError) as exc_info:
        config.from_pyfile("missing.py")
    assert exc_info.value.errno == errno.ENOENT
    assert exc_info.value.strerror is not None
    assert exc_info.value.strerror.startswith("Unable to load configuration file (")
    assert "Unable to load configuration file" in str(exc_info.value)
    assert str(tmp_path / "missing.py") in str(exc_info.value)


def test_from_pyfile_missing_matches_flask_message(tmp_path: Path) -> None:
    with pytest.raises(OSError) as ours:
        Config(tmp_path).from_pyfile("missing.py")
    with pytest.raises(OSError) as theirs:
        flask.Config(tmp_path).from_pyfile("missing.py")
    assert str(ours.value) == str(theirs.value)


def test_from_pyfile_silent(tmp_path: Path) -> None:
    config = Config(tmp_path)
    assert config.from_pyfile("missing.py", silent=True) is False
    (tmp_path / "adir").mkdir()
    assert config.from_pyfile("adir", silent=True) is False
    assert config == {}


def test_from_pyfile_syntax_error_propagates(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("X = (\n")
    with pytest.raises(SyntaxError):
        Config(tmp_path).from_pyfile("broken.py", silent=True)


def test_from_envvar(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    (tmp_path / "env_settings.py").write_text("FROM_ENV = 'yes'\n")
    clean_env.setenv("CARBOY_TEST_SETTINGS", str(tmp_path / "env_settings.py"))
    config = Config(".")
    assert config.from_envvar("CARBOY_TEST_SETTINGS") is True
    assert config["FROM_ENV"] == "yes"


def test_from_envvar_unset(clean_env: pytest.MonkeyPatch) -> None:
    config = Config(".")
    with pytest.raises(RuntimeError, match="'CARBOY_TEST_SETTINGS' is not set"):
        config.from_envvar("CARBOY_TEST_SETTINGS")
    assert config.from_envvar("CARBOY_TEST_SETTINGS", silent=True) is False
    clean_env.setenv("CARBOY_TEST_SETTINGS", "")
    with pytest.raises(RuntimeError, match="CARBOY_TEST_SETTINGS"):
        config.from_envvar("CARBOY_TEST_SETTINGS")


def test_from_envvar_missing_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CARBOY_TEST_SETTINGS", str(tmp_path / "nope.py"))
    config = Config(".")
    with pytest.raises(OSError, match="Unable to load configuration file"):
        config.from_envvar("CARBOY_TEST_SETTINGS")
    assert config.from_envvar("CARBOY_TEST_SETTINGS", silent=True) is False


def test_from_file_json(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"SECRET_KEY": "j", "lower": 1, "N": [1]}))
    config = Config(tmp_path)
    assert config.from_file("c.json", load=json.load) is True
    assert config == {"SECRET_KEY": "j", "N": [1]}


def test_from_file_toml_binary(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('TESTING = true\nPORT = 8000\nname = "x"\n')
    config = Config(tmp_path)
    assert config.from_file("c.toml", load=tomllib.load, text=False)
    assert config == {"TESTING": True, "PORT": 8000}


def test_from_file_missing(tmp_path: Path) -> None:
    config = Config(tmp_path)
    with pytest.raises(OSError, match="Unable to load configuration file") as exc_info:
        config.from_file("nope.json", load=json.load)
    assert exc_info.value.errno == errno.ENOENT
    assert config.from_file("nope.json", load=json.load, silent=True) is False


def test_from_file_bad_content_propagates(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        Config(tmp_path).from_file("bad.json", load=json.load, silent=True)


def test_from_mapping() -> None:
    config = Config(".")
    assert config.from_mapping({"A_KEY": 1, "lower": 2}, B_KEY=3) is True
    assert config == {"A_KEY": 1, "B_KEY": 3}
    config.from_mapping([("C_KEY", 4)])  # type: ignore[arg-type]
    assert config["C_KEY"] == 4
    config.from_mapping({"A_KEY": "mapping"}, A_KEY="kwarg")
    assert config["A_KEY"] == "kwarg"
    assert config.from_mapping() is True


def test_from_mapping_rejects_non_mapping() -> None:
    with pytest.raises((TypeError, ValueError)):
        Config(".").from_mapping(5)  # type: ignore[arg-type]


def test_get_namespace() -> None:
    data = {
        "IMAGE_STORE_TYPE": "fs",
        "IMAGE_STORE_PATH": "/var/app/images",
        "IMAGE_STORE_BASE_URL": "http://img.example",
        "OTHER": 1,
    }
    config = Config(".", data)
    reference = flask.Config(".", data)
    for kwargs in (
        {},
        {"lowercase": False},
        {"trim_namespace": False},
        {"lowercase": False, "trim_namespace": False},
    ):
        ours = config.get_namespace("IMAGE_STORE_", **kwargs)
        assert ours == reference.get_namespace("IMAGE_STORE_", **kwargs)
    assert config.get_namespace("IMAGE_STORE_") == {
        "type": "fs",
        "path": "/var/app/images",
        "base_url": "http://img.example",
    }
    assert config.get_namespace("MISSING_") == {}


def test_from_prefixed_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_STRING", "value")
    clean_env.setenv("FLASK_BOOL", "true")
    clean_env.setenv("FLASK_INT", "1")
    clean_env.setenv("FLASK_FLOAT", "1.5")
    clean_env.setenv("FLASK_LIST", "[1, 2]")
    clean_env.setenv("FLASK_DICT", '{"k": "v"}')
    clean_env.setenv("NOT_FLASK_OTHER", "x")
    config = Config(".")
    assert config.from_prefixed_env() is True
    expected = {
        "STRING": "value",
        "BOOL": True,
        "INT": 1,
        "FLOAT": 1.5,
        "LIST": [1, 2],
        "DICT": {"k": "v"},
    }
    assert config == expected
    reference = flask.Config(".")
    reference.from_prefixed_env()
    assert dict(config) == dict(reference)


def test_from_prefixed_env_nested(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_EXIST__ok", "other")
    clean_env.setenv("FLASK_EXIST__inner__ik", "2")
    clean_env.setenv("FLASK_EXIST__new__more", '{"k": false}')
    clean_env.setenv("FLASK_NEW__K", "v")
    config = Config(".", {"EXIST": {"ok": "value", "flag": True, "inner": {"ik": 1}}})
    config.from_prefixed_env()
    reference = flask.Config(".", {"EXIST": {"ok": "value", "flag": True, "inner": {"ik": 1}}})
    reference.from_prefixed_env()
    assert config["EXIST"] == {
        "ok": "other",
        "flag": True,
        "inner": {"ik": 2},
        "new": {"more": {"k": False}},
    }
    assert config["NEW"] == {"K": "v"}
    assert dict(config) == dict(reference)


def test_from_prefixed_env_nested_into_scalar(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_NAME__PART", "x")
    config = Config(".", {"NAME": "scalar"})
    with pytest.raises(TypeError):
        config.from_prefixed_env()


def test_from_prefixed_env_custom_prefix_and_loads(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MYAPP_A", "1")
    clean_env.setenv("MYAPP_B", "not json")
    clean_env.setenv("FLASK_C", "3")
    clean_env.setenv("CARBOY_D", "4")
    config = Config(".")
    config.from_prefixed_env("MYAPP")
    assert config == {"A": 1, "B": "not json"}

    def upper(value: str) -> t.Any:
        if value == "bad":
            raise ValueError(value)
        return value.upper()

    clean_env.setenv("MYAPP_B", "bad")
    config = Config(".")
    config.from_prefixed_env("MYAPP", loads=upper)
    assert config == {"A": "1", "B": "bad"}


def test_from_prefixed_env_reads_carboy_prefix_too(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_SHARED", "1")
    clean_env.setenv("CARBOY_SHARED", "2")
    clean_env.setenv("FLASK_ONLY_FLASK", '"f"')
    clean_env.setenv("CARBOY_ONLY_CARBOY", '"c"')
    config = Config(".")
    config.from_prefixed_env()
    assert config == {"SHARED": 2, "ONLY_FLASK": "f", "ONLY_CARBOY": "c"}


def test_from_prefixed_env_sorted_order(clean_env: pytest.MonkeyPatch) -> None:
    # "A__B" sorts after "A", so the nested value is written into the dict set by FLASK_A.
    clean_env.setenv("FLASK_A__B", "2")
    clean_env.setenv("FLASK_A", '{"C": 1}')
    config = Config(".")
    config.from_prefixed_env()
    assert config == {"A": {"C": 1, "B": 2}}


class _Holder:
    debug = ConfigAttribute[bool]("DEBUG")
    lifetime = ConfigAttribute[timedelta](
        "LIFETIME",
        get_converter=lambda v: v if isinstance(v, timedelta) else timedelta(seconds=v),
    )

    def __init__(self) -> None:
        self.config = Config(".", {"DEBUG": False, "LIFETIME": 60})


def test_config_attribute() -> None:
    holder = _Holder()
    assert holder.debug is False
    holder.debug = True
    assert holder.config["DEBUG"] is True
    assert holder.lifetime == timedelta(seconds=60)
    holder.lifetime = 5  # type: ignore[assignment]
    assert holder.config["LIFETIME"] == 5
    assert holder.lifetime == timedelta(seconds=5)
    descriptor = _Holder.__dict__["debug"]
    assert _Holder.debug is descriptor
    assert descriptor.__name__ == "DEBUG"
    assert descriptor.get_converter is None


def test_config_attribute_missing_key() -> None:
    holder = _Holder()
    del holder.config["DEBUG"]
    with pytest.raises(KeyError):
        _ = holder.debug
