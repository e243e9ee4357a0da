"""The seed's three sample services, small enough to read in one sitting.

    python -m sidecar.demo.apps user      --port 16080
    python -m sidecar.demo.apps portfolio --port 16280
    python -m sidecar.demo.apps trading   --port 16180 --outbound 127.0.0.1:16101

They know nothing about the mesh except one thing: trading reaches portfolio through its
own sidecar's outbound listener, naming the service in the Host header, exactly as an
app in a pod would. Each request does a millisecond or two of simulated work so that
latencies look like a service's, not like a loopback echo.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

__all__ = ["SERVICES", "build_app", "main"]

SERVICES = ("user", "trading", "portfolio")
TRACE_HEADERS = frozenset(("traceparent", "tracestate", "b3"))
VERSION = "v1"
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "TSLA", "JPM", "V")
# Deterministic "market": the demo is about the mesh, not about prices.
PRICES = {s: round(50 + 37.5 * i + (i * i) % 13, 2) for i, s in enumerate(SYMBOLS)}
MAX_USER_ID = 100_000
MAX_KEPT_ORDERS = 10_000  # bounded, so --keep-running for a day does not grow forever

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def simulated_work() -> None:
    await asyncio.sleep(random.uniform(0.001, 0.003))


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def json_or_none(text: str) -> Any:
    # A malformed body is the client's mistake: answer 400, do not raise a 500.
    try:
        return json.loads(text)
    except ValueError:
        return None


def user_id_from(request: web.Request, key: str) -> int | None:
    try:
        uid = int(request.match_info[key])
    except ValueError:
        return None
    return uid if 1 <= uid <= MAX_USER_ID else None


def health(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "UP", "service": name, "version": VERSION})
    return handler


# --- user ------------------------------------------------------------------------------

async def get_user(request: web.Request) -> web.Response:
    uid = user_id_from(request, "id")
    if uid is None:
        return error(404, "USER_NOT_FOUND", f"no user {request.match_info['id']!r}")
    await simulated_work()
    return web.json_response({
        "id": uid,
        "username": f"trader{uid}",
        "email": f"trader{uid}@trademaster.example",
        "display_name": f"Trader {uid}",
        "tier": ("basic", "pro", "institutional")[uid % 3],
        "kyc_status": "VERIFIED" if uid % 7 else "PENDING",
        "created_at": f"2023-{1 + uid % 12:02d}-{1 + uid % 28:02d}T09:30:00Z",
    })


def user_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/api/users/{id}", get_user)
    return app


# --- portfolio -------------------------------------------------------------------------

class Book:
    """Positions per user, created on first sight from the user id so runs are repeatable."""

    def __init__(self) -> None:
        self._positions: dict[int, dict[str, int]] = {}

    def positions(self, uid: int) -> dict[str, int]:
        if uid not in self._positions:
            rng = random.Random(uid)
            self._positions[uid] = {s: rng.randint(1, 200) for s in rng.sample(SYMBOLS, 3)}
        return self._positions[uid]

    def apply(self, uid: int, symbol: str, signed_quantity: int) -> int:
        held = self.positions(uid)
        held[symbol] = held.get(symbol, 0) + signed_quantity
        return held[symbol]


def portfolio_view(uid: int, held: dict[str, int]) -> dict[str, Any]:
    values = {s: round(q * PRICES[s], 2) for s, q in held.items()}
    lines = [{"symbol": s, "quantity": q, "price": PRICES[s], "market_value": values[s]}
             for s, q in sorted(held.items())]
    return {"user_id": uid, "currency": "USD", "positions": lines,
            "total_value": round(sum(values.values()), 2),
            "as_of": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def portfolio_app() -> web.Application:
    book = Book()

    async def get_portfolio(request: web.Request) -> web.Response:
        uid = user_id_from(request, "user_id")
        if uid is None:
            return error(404, "USER_NOT_FOUND", f"no user {request.match_info['user_id']!r}")
        await simulated_work()
        return web.json_response(portfolio_view(uid, book.positions(uid)))

    async def update(request: web.Request) -> web.Response:
        trade, problem = parse_trade(await request.json(loads=json_or_none))
        if trade is None:
            return error(400, "INVALID_UPDATE", problem)
        await simulated_work()
        sign = 1 if trade["side"] == "BUY" else -1
        quantity = book.apply(trade["user_id"], trade["symbol"], sign * trade["quantity"])
        return web.json_response({"user_id": trade["user_id"], "symbol": trade["symbol"],
                                  "quantity": quantity, "status": "APPLIED"})

    app = web.Application()
    app.router.add_get("/api/portfolio/{user_id}", get_portfolio)
    app.router.add_post("/internal/portfolio/update", update)
    return app


# --- trading ---------------------------------------------------------------------------

def parse_trade(body: Any) -> tuple[dict[str, Any] | None, str]:
    """An order or a portfolio update: the same four fields, checked the same way."""
    if not isinstance(body, dict):
        return None, "body must be a JSON object"
    uid, symbol, side, qty = (body.get(k) for k in ("user_id", "symbol", "side", "quantity"))
    if not isinstance(uid, int) or not 1 <= uid <= MAX_USER_ID:
        return None, f"user_id must be an integer in 1..{MAX_USER_ID}"
    if symbol not in PRICES:
        return None, f"symbol must be one of {', '.join(SYMBOLS)}"
    if side not in ("BUY", "SELL"):
        return None, "side must be BUY or SELL"
    if not isinstance(qty, int) or qty < 1:
        return None, "quantity must be a positive integer"
    return {"user_id": uid, "symbol": symbol, "side": side, "quantity": qty}, ""


def trading_app(outbound: str) -> web.Application:
    orders: OrderedDict[str, dict[str, Any]] = OrderedDict()
    ids = itertools.count(1)
    update_url = f"http://{outbound}/internal/portfolio/update"
    session_key = web.AppKey("session", ClientSession)

    async def client(app: web.Application) -> Any:
        # One keep-alive pool for the app's lifetime, as a real service client would hold.
        async with ClientSession(connector=TCPConnector(limit=64, keepalive_timeout=30),
                                 timeout=ClientTimeout(total=5)) as session:
            app[session_key] = session
            yield

    async def place_order(request: web.Request) -> web.Response:
        trade, problem = parse_trade(await request.json(loads=json_or_none))
        if trade is None:
            return error(400, "INVALID_ORDER", problem)
        await simulated_work()
        order_id = f"ord-{next(ids):08d}"
        headers = {"Host": "portfolio", "X-Request-Id": order_id}
        # Carry the trace on: the sidecars then see one trace from the order to portfolio.
        headers.update({k: v for k, v in request.headers.items() if k.lower() in TRACE_HEADERS})
        try:
            async with request.app[session_key].post(update_url, json=trade, headers=headers) as r:
                if r.status != 200:
                    return error(502, "PORTFOLIO_UPDATE_FAILED",
                                 f"portfolio answered {r.status}: {(await r.text())[:200]}")
                position = await r.json()
        except (ClientError, TimeoutError) as exc:
            return error(502, "PORTFOLIO_UNREACHABLE", f"{type(exc).__name__}: {exc}")
        order = {"order_id": order_id, **trade, "price": PRICES[trade["symbol"]],
                 "status": "FILLED", "position_after": position["quantity"],
                 "filled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        orders[order_id] = order
        if len(orders) > MAX_KEPT_ORDERS:
            orders.popitem(last=False)
        return web.json_response(order, status=201)

    async def get_order(request: web.Request) -> web.Response:
        order = orders.get(request.match_info["id"])
        if order is None:
            return error(404, "ORDER_NOT_FOUND", f"no order {request.match_info['id']!r}")
        return web.json_response(order)

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_post("/api/trading/orders", place_order)
    app.router.add_get("/api/trading/orders/{id}", get_order)
    return app


# --- process ---------------------------------------------------------------------------

def build_app(name: str, outbound: str | None = None) -> web.Application:
    if name == "user":
        app = user_app()
    elif name == "portfolio":
        app = portfolio_app()
    elif name == "trading":
        if outbound is None:
            raise ValueError("trading needs --outbound: the address of its sidecar's outbound")
        app = trading_app(outbound)
    else:
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    app.router.add_get("/actuator/health", health(name))
    return app


async def serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.demo.apps",
                                     description="One of the demo's sample services.")
    parser.add_argument("name", choices=SERVICES)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--outbound", metavar="HOST:PORT",
                        help="the local sidecar's outbound listener (trading only)")
    args = parser.parse_args(argv)
    try:
        app = build_app(args.name, args.outbound)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        import uvloop
        uvloop.run(serve(app, args.port))
    except ImportError:  # uvloop is a dependency, but the demo apps do not need it
        asyncio.run(serve(app, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
