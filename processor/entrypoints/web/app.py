"""The workbench's application factory: server-rendered pages (Jinja2, autoescaped; a little htmx served
from this package) and the JSON API, with signed session cookies, CSRF tokens on every form, login
throttling and roles enforced here on the server (and again by the fold for every action)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from asgi_csrf import asgi_csrf
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from events.money import format_cents
from processor.entrypoints.web.auth import User
from processor.entrypoints.web.context import WebContext

HERE = Path(__file__).parent
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class NotAllowed(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=403, detail=detail)


class NeedsLogin(Exception):
    pass


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["money"] = lambda c: "" if c is None else format_cents(c)
    env.filters["month"] = lambda d: "" if d is None else f"{d:%Y-%m}"
    env.filters["dt"] = lambda t: "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S %Z")
    env.filters["dollars"] = lambda c: "" if c is None else f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}"
    env.filters["words"] = lambda s: "" if s is None else str(s).replace("_", " ")
    return env


def user_of(request: Request) -> User | None:
    """The token's service (Authorization: Bearer) or the session's person, if still active."""
    ctx: WebContext = request.app.state.ctx
    header = request.headers.get("authorization", "")
    if header:
        if not header.startswith("Bearer "):
            return None
        return ctx.users.token_user(header.removeprefix("Bearer ").strip())
    login = request.session.get("login")
    if not isinstance(login, str):
        return None
    user = ctx.users.user(login)
    return user if user is not None and user.active else None


def require_user(request: Request) -> User:
    user = user_of(request)
    if user is None:
        raise NeedsLogin()
    return user


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page from its template; every page gets the user, the CSRF token and a flash message."""
    ctx: WebContext = request.app.state.ctx
    env: jinja2.Environment = request.app.state.templates
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    get_token = request.scope.get("csrftoken")
    html = env.get_template(name).render(
        request=request, user=user_of(request), csrf=get_token() if get_token else "", flash=flash,
        plan=ctx.plan, now=ctx.clock(), poll_ms=ctx.settings.web.pending_poll_ms, **values,
    )
    return HTMLResponse(html, status_code=status_code)


def parse_known_at(ctx: WebContext, text: str | None) -> datetime | None:
    """R for as-of views: empty is now (live); otherwise what `replay --known-at` accepts."""
    from replay.statements import TimeParseError
    from replay.statements import parse_known_at as parse

    if not text or not text.strip():
        return None
    try:
        return parse(text, tz=ctx.plan.timezone)
    except TimeParseError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


def parse_through(text: str | None) -> date | None:
    from replay.statements import TimeParseError
    from replay.statements import parse_through as parse

    try:
        return parse(text)
    except TimeParseError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


def local(ctx: WebContext, at: datetime | None) -> datetime | None:
    return None if at is None else at.astimezone(ZoneInfo(ctx.plan.timezone))


class _TooLarge(Exception):
    pass


def _limit_body(app: ASGIApp, bytes_max: int) -> ASGIApp:
    """Refuse request bodies larger than ``bytes_max`` (413) before anything reads them, whether they say
    their length or not."""

    async def too_large(send: Callable[[Any], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": f"request body over {bytes_max} bytes".encode()})

    async def limited(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
                      ) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > bytes_max):
            await too_large(send)
            return
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > bytes_max:
                raise _TooLarge()
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await too_large(send)

    return limited


def create_app(ctx: WebContext) -> Any:
    """The ASGI application: FastAPI inside CSRF protection inside a request-size limit."""
    from processor.entrypoints.web import api, pages

    app = FastAPI(title="benefits-ledger workbench", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="The ledger's accounts, discrepancies (the work queue), statements as of any"
                  " (E, R), agencies and dead letters. Authenticate with `Authorization: Bearer <token>`"
                  " (benefits-ledger user token) or a session cookie.")
    app.state.ctx = ctx
    app.state.templates = templates()
    app.add_middleware(SessionMiddleware, secret_key=ctx.secret, session_cookie="ledger_session",
                       max_age=ctx.settings.web.session_max_age_s, same_site="lax",
                       https_only=ctx.settings.web.secure_cookies)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)

    @app.exception_handler(NeedsLogin)
    async def to_login(request: Request, exc: NeedsLogin) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={target}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return render(request, "error.html", status_code=exc.status_code, message=str(exc.detail),
                      code=exc.status_code)

    protected = asgi_csrf(app, signing_secret=ctx.secret, always_protect={"/login"},
                          cookie_secure=ctx.settings.web.secure_cookies, cookie_name="ledger_csrf",
                          cookie_samesite="Lax")
    return _limit_body(protected, ctx.settings.web.request_body_bytes_max)
