"""Class-based views: View and MethodView."""

from __future__ import annotations

import functools
import typing as t

import pytest

from carboy import Blueprint, Carboy, request
from carboy.views import MethodView, View

# The ``app`` fixture comes from conftest.py: every test runs on both dispatch paths.


# -- View ------------------------------------------------------------------------------------


def test_view_dispatch_and_function_attributes(app: Carboy) -> None:
    class Greeting(View):
        """Says hello."""

        def dispatch_request(self, name: str) -> str:  # type: ignore[override]
            return f"hello {name}"

    view = Greeting.as_view("greet")
    assert view.__name__ == "greet"
    assert view.__doc__ == "Says hello."
    assert view.__module__ == __name__
    assert view.view_class is Greeting  # type: ignore[union-attr]
    assert view.methods is None  # type: ignore[union-attr]
    assert view.provide_automatic_options is None  # type: ignore[union-attr]

    app.add_url_rule("/hello/<name>", view_func=view)
    assert "greet" in app.view_functions
    response = app.test_client().get("/hello/ann")
    assert response.status_code == 200
    assert response.text == "hello ann"


def test_view_without_dispatch_request_fails(app: Carboy) -> None:
    app.testing = False
    app.add_url_rule("/", view_func=View.as_view("plain"))
    assert app.test_client().get("/").status_code == 500


def test_class_arguments_reach_constructor(app: Carboy) -> None:
    class Template(View):
        def __init__(self, prefix: str, *, suffix: str) -> None:
            self.prefix = prefix
            self.suffix = suffix

        def dispatch_request(self) -> str:
            return self.prefix + "body" + self.suffix

    app.add_url_rule("/", view_func=Template.as_view("t", "<", suffix=">"))
    assert app.test_client().get("/").text == "<body>"


def test_init_every_request(app: Carboy) -> None:
    made: list[object] = []

    class Fresh(View):
        def __init__(self) -> None:
            made.append(self)

        def dispatch_request(self) -> str:
            return str(len(made))

    class Shared(View):
        init_every_request = False

        def __init__(self) -> None:
            made.append(self)
            self.calls = 0

        def dispatch_request(self) -> str:
            self.calls += 1
            return str(self.calls)

    app.add_url_rule("/fresh", view_func=Fresh.as_view("fresh"))
    assert made == []
    client = app.test_client()
    assert client.get("/fresh").text == "1"
    assert client.get("/fresh").text == "2"
    assert len(made) == 2 and made[0] is not made[1]

    made.clear()
    app2 = Carboy(__name__)
    app2.add_url_rule("/shared", view_func=Shared.as_view("shared"))
    assert len(made) == 1  # made once, by as_view
    client = app2.test_client()
    assert client.get("/shared").text == "1"
    assert client.get("/shared").text == "2"
    assert len(made) == 1


def test_methods_restrict_routing(app: Carboy) -> None:
    class PostOnly(View):
        methods = ["POST"]

        def dispatch_request(self) -> str:
            return request.method

    app.add_url_rule("/", view_func=PostOnly.as_view("post_only"))
    client = app.test_client()
    assert client.post("/").text == "POST"
    response = client.get("/")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_decorators_wrap_in_order(app: Carboy) -> None:
    def tag(label: str) -> t.Callable[[t.Callable[..., str]], t.Callable[..., str]]:
        def decorator(f: t.Callable[..., str]) -> t.Callable[..., str]:
            @functools.wraps(f)
            def wrapper(**kwargs: t.Any) -> str:
                return f"{label}({f(**kwargs)})"

            return wrapper

        return decorator

    seen_names: list[str] = []

    def record_name(f: t.Callable[..., str]) -> t.Callable[..., str]:
        seen_names.append(f.__name__)
        return f

    class Decorated(View):
        decorators = [record_name, tag("inner"), tag("outer")]

        def dispatch_request(self, x: str) -> str:  # type: ignore[override]
            return x

    view = Decorated.as_view("decorated")
    assert seen_names == ["decorated"]
    assert view.__name__ == "decorated"
    assert view.view_class is Decorated  # type: ignore[union-attr]
    app.add_url_rule("/<x>", view_func=view)
    assert app.test_client().get("/val").text == "outer(inner(val))"


def test_decorator_can_short_circuit(app: Carboy) -> None:
    def deny(f: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        def wrapper(**kwargs: t.Any) -> t.Any:
            if request.args.get("ok") != "1":
                return "denied", 403
            return f(**kwargs)

        return wrapper

    class Guarded(View):
        decorators = [deny]

        def dispatch_request(self) -> str:
            return "allowed"

    app.add_url_rule("/", view_func=Guarded.as_view("guarded"))
    client = app.test_client()
    response = client.get("/")
    assert (response.status_code, response.text) == (403, "denied")
    assert client.get("/?ok=1").text == "allowed"


def test_provide_automatic_options_false(app: Carboy) -> None:
    class NoOptions(View):
        methods = ["GET"]
        provide_automatic_options = False

        def dispatch_request(self) -> str:
            return "x"

    class WithOptions(View):
        methods = ["GET"]

        def dispatch_request(self) -> str:
            return "x"

    app.add_url_rule("/no", view_func=NoOptions.as_view("no"))
    app.add_url_rule("/yes", view_func=WithOptions.as_view("yes"))
    client = app.test_client()
    assert client.open("/no", method="OPTIONS").status_code == 405
    response = client.open("/yes", method="OPTIONS")
    assert response.status_code == 200
    assert "GET" in response.headers["Allow"]


def test_view_on_blueprint(app: Carboy) -> None:
    class Item(View):
        def dispatch_request(self, item_id: int) -> str:  # type: ignore[override]
            return f"{request.blueprint}:{request.endpoint}:{item_id}"

    bp = Blueprint("shop", __name__, url_prefix="/shop")
    bp.add_url_rule("/item/<int:item_id>", view_func=Item.as_view("item"))
    app.register_blueprint(bp)
    assert app.test_client().get("/shop/item/7").text == "shop:shop.item:7"


# -- MethodView ------------------------------------------------------------------------------


class Counter(MethodView):
    def get(self) -> str:
        return "get"

    def post(self) -> str:
        return "post"


def test_method_view_collects_methods() -> None:
    assert Counter.methods == {"GET", "POST"}

    class Child(Counter):
        def delete(self) -> str:
            return "delete"

    assert Child.methods == {"GET", "POST", "DELETE"}

    class Explicit(Counter):
        methods = ["GET"]

    assert Explicit.methods == ["GET"]

    class Empty(MethodView):
        pass

    assert Empty.methods is None


def test_method_view_collects_methods_from_mixins() -> None:
    class PutMixin:
        def put(self) -> str:
            return "put"

    class Combined(PutMixin, Counter):
        pass

    assert Combined.methods == {"GET", "POST", "PUT"}


def test_method_view_dispatch(app: Carboy) -> None:
    class Resource(MethodView):
        def get(self, rid: int) -> str:
            return f"get {rid}"

        def put(self, rid: int) -> str:
            return f"put {rid} {request.get_data(as_text=True)}"

        def delete(self, rid: int) -> tuple[str, int]:
            return "", 204

    app.add_url_rule("/r/<int:rid>", view_func=Resource.as_view("resource"))
    client = app.test_client()
    assert client.get("/r/1").text == "get 1"
    assert client.put("/r/2", data="body").text == "put 2 body"
    assert client.delete("/r/3").status_code == 204
    response = client.post("/r/4")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "PUT", "DELETE"}


def test_head_falls_back_to_get(app: Carboy) -> None:
    calls: list[str] = []

    class OnlyGet(MethodView):
        def get(self) -> tuple[str, dict[str, str]]:
            calls.append(request.method)
            return "full body", {"X-Handled": "get"}

    app.add_url_rule("/", view_func=OnlyGet.as_view("only_get"))
    response = app.test_client().head("/")
    assert response.status_code == 200
    assert response.headers["X-Handled"] == "get"
    assert response.data == b""
    assert calls == ["HEAD"]


def test_explicit_head_handler_wins(app: Carboy) -> None:
    class WithHead(MethodView):
        def get(self) -> str:
            return "get"

        def head(self) -> tuple[str, dict[str, str]]:
            return "", {"X-Handled": "head"}

    assert WithHead.methods == {"GET", "HEAD"}
    app.add_url_rule("/", view_func=WithHead.as_view("with_head"))
    assert app.test_client().head("/").headers["X-Handled"] == "head"


def test_method_listed_without_handler_is_server_error(app: Carboy) -> None:
    class Incomplete(MethodView):
        methods = ["GET", "POST"]

        def get(self) -> str:
            return "get"

    app.testing = False
    app.add_url_rule("/", view_func=Incomplete.as_view("incomplete"))
    client = app.test_client()
    assert client.get("/").text == "get"
    assert client.post("/").status_code == 500


def test_method_listed_without_handler_error_is_explicit(app: Carboy) -> None:
    class Incomplete(MethodView):
        methods = ["GET", "PATCH"]

        def get(self) -> str:
            return "get"

    with (
        app.test_request_context("/", method="PATCH"),
        pytest.raises(NotImplementedError, match="PATCH"),
    ):
        Incomplete().dispatch_request()


def test_method_view_on_blueprint_with_decorators(app: Carboy) -> None:
    def add_header(f: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        def wrapper(**kwargs: t.Any) -> t.Any:
            response = app.make_response(f(**kwargs))
            response.headers["X-Decorated"] = "1"
            return response

        return wrapper

    class Users(MethodView):
        decorators = [add_header]

        def get(self, user_id: int | None = None) -> str:
            return "list" if user_id is None else f"user {user_id}"

        def post(self) -> tuple[str, int]:
            return "created", 201

    bp = Blueprint("api", __name__, url_prefix="/api")
    view = Users.as_view("users")
    bp.add_url_rule("/users/", defaults={"user_id": None}, view_func=view, methods=["GET"])
    bp.add_url_rule("/users/", view_func=view, methods=["POST"])
    bp.add_url_rule("/users/<int:user_id>", view_func=view, methods=["GET"])
    app.register_blueprint(bp)
    client = app.test_client()
    response = client.get("/api/users/")
    assert (response.text, response.headers["X-Decorated"]) == ("list", "1")
    assert client.get("/api/users/5").text == "user 5"
    response = client.post("/api/users/")
    assert (response.status_code, response.text) == (201, "created")


def test_async_method_handler(app: Carboy) -> None:
    class AsyncView(MethodView):
        async def get(self) -> str:
            return "async get"

    class AsyncDispatch(View):
        async def dispatch_request(self) -> str:  # type: ignore[override]
            return "async dispatch"

    app.add_url_rule("/m", view_func=AsyncView.as_view("m"))
    app.add_url_rule("/v", view_func=AsyncDispatch.as_view("v"))
    client = app.test_client()
    assert client.get("/m").text == "async get"
    assert client.get("/v").text == "async dispatch"


def test_replacing_view_class_changes_instances(app: Carboy) -> None:
    class First(View):
        def dispatch_request(self) -> str:
            return "first"

    class Second(View):
        def dispatch_request(self) -> str:
            return "second"

    view = First.as_view("swap")
    view.view_class = Second  # type: ignore[union-attr]
    app.add_url_rule("/", view_func=view)
    assert app.test_client().get("/").text == "second"


def test_shared_instance_with_decorators(app: Carboy) -> None:
    def upper(f: t.Callable[..., str]) -> t.Callable[..., str]:
        def wrapper(**kwargs: t.Any) -> str:
            return f(**kwargs).upper()

        return wrapper

    class Shared(MethodView):
        init_every_request = False
        decorators = [upper]

        def __init__(self, word: str) -> None:
            self.word = word

        def get(self) -> str:
            return self.word

    view = Shared.as_view("shared", "hi")
    assert view.view_class is Shared  # type: ignore[union-attr]
    assert view.methods == {"GET"}  # type: ignore[union-attr]
    app.add_url_rule("/", view_func=view)
    assert app.test_client().get("/").text == "HI"
