"""``autotune rpc tracker|server``: measuring on other machines through TVM RPC."""

from __future__ import annotations


def run_rpc(args) -> dict:
    """Run an RPC tracker or server in the foreground until Ctrl-C."""
    from ..measure.rpc import serve_forever, start_server, start_tracker

    if args.role == "tracker":
        service, what = start_tracker(args.host, args.port, args.allow_remote), "RPC tracker"
    else:
        service = start_server(args.key, args.tracker, args.host, args.port, args.allow_remote)
        what = f"RPC server for key {args.key!r} at tracker {args.tracker},"
    serve_forever(service, what)
    return {"role": args.role, "host": service.host, "port": service.port}


def add_rpc(sub) -> None:
    p = sub.add_parser("rpc", help="run a TVM RPC tracker, or a server measuring on this machine")
    p.set_defaults(func=run_rpc, json=False)
    roles = p.add_subparsers(dest="role", required=True)
    tracker = roles.add_parser("tracker", help="where servers register and tuning jobs find them")
    tracker.add_argument("--port", type=int, default=9190, help="port to listen on (default 9190)")
    server = roles.add_parser("server", help="measure candidates on this machine's devices")
    server.add_argument("--key", required=True, help="device kind to register under, e.g. h100")
    server.add_argument("--tracker", default="127.0.0.1:9190", metavar="HOST:PORT",
                        help="the tracker to register with (default 127.0.0.1:9190)")
    server.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    for role in (tracker, server):
        role.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        role.add_argument("--allow-remote", action="store_true",
                          help="allow a non-loopback --host; TVM RPC is plaintext and unauthenticated")
