"""Run the sandbox providers with werkzeug's threaded server: `python -m sandbox --port 8090`."""

from __future__ import annotations

import argparse
import os

from sandbox.app import create_app


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    parser.add_argument("--data-dir", default=os.environ.get("SANDBOX_DATA_DIR") or None,
                        help="folder keeping the ledgers across restarts ($SANDBOX_DATA_DIR; default: memory only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve the sandbox until interrupted."""
    arguments = _arguments(argv)
    create_app(arguments.data_dir).run(host=arguments.host, port=arguments.port, threaded=True)


if __name__ == "__main__":
    main()
