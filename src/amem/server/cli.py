"""`amem serve` and `amem mcp`: start the REST API (with the web page) or the MCP server.

FastAPI, uvicorn and the MCP SDK are imported when a command runs, not when the CLI loads.
"""

from __future__ import annotations

import ipaddress

import click

from ..cli import Ctx, pass_ctx
from ..errors import ConfigError

_SERVER_HINT = "install the server extra: pip install 'amem[server]'"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8420, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-keys",
    help="KEY:USER pairs, comma-separated. Prefer env AMEM_API_KEYS (command lines are visible to others).",
)
@click.option("--no-auth", is_flag=True, help="Allow serving without API keys on a non-loopback address.")
@click.option(
    "--consolidate-every",
    "consolidate_every",
    type=click.FloatRange(min=0),
    metavar="HOURS",
    help="Consolidate the whole memory every HOURS hours, as a job (0: never) [env AMEM_CONSOLIDATE_EVERY].",
)
@pass_ctx
def serve(
    c: Ctx, host: str, port: int, api_keys: str | None, no_auth: bool, consolidate_every: float | None
) -> None:
    """Serve the REST API (schema at /openapi.json) and the memory-graph web page at /."""
    try:
        import uvicorn

        from .api import create_app
        from .auth import KeyRing, parse_keys
    except ImportError as exc:
        raise ConfigError(
            f"`amem serve` needs FastAPI and uvicorn ({exc.name} is missing); {_SERVER_HINT}"
        ) from exc
    settings = c.settings
    keys = parse_keys(api_keys if api_keys is not None else settings.api_keys)
    if not keys and not _loopback(host) and not no_auth:
        raise ConfigError(
            f"refusing to serve every user's notes without API keys on {host}; set AMEM_API_KEYS="
            "'key:user,...' (or pass --no-auth if a proxy in front authenticates)"
        )
    # without keys, only loopback Host names: a web page rebinding its own name to 127.0.0.1 gets 400
    trusted = None if keys or not _loopback(host) else ["127.0.0.1", "localhost", "[::1]", "::1"]
    hours = consolidate_every if consolidate_every is not None else settings.consolidate_every
    memory = c.memory()
    app = create_app(memory, KeyRing(keys), trusted_hosts=trusted, consolidate_every_s=hours * 3600)
    auth = f"{len(keys)} API key(s)" if keys else "no authentication"
    every = f", consolidating every {hours:g} h" if hours > 0 else ""
    click.echo(f"amem {memory.store.url} on http://{host}:{port} ({auth}{every}); Ctrl-C stops", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@click.command()
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio for desktop agents; http for streamable HTTP at /mcp.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (http).")
@click.option("--port", default=8421, show_default=True, type=click.IntRange(0, 65535), help="Port (http).")
@click.option("--no-auth", is_flag=True, help="Allow http on a non-loopback address (a proxy authenticates).")
@pass_ctx
def mcp(c: Ctx, transport: str, host: str, port: int, no_auth: bool) -> None:
    """Serve the memory as MCP tools (add, search, get, update, delete, history)."""
    if transport == "http" and not _loopback(host) and not no_auth:
        raise ConfigError(
            f"refusing to serve MCP over http on {host} without authentication: anyone who reaches it can "
            "read and change the memory; keep 127.0.0.1, or pass --no-auth behind an authenticating proxy"
        )
    try:
        from .mcp_server import run
    except ImportError as exc:
        raise ConfigError(f"`amem mcp` needs the MCP SDK ({exc.name} is missing); {_SERVER_HINT}") from exc
    run(c.memory(), transport, host, port)
