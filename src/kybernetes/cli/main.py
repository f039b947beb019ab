"""The ``kyb`` command."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from kybernetes import __version__


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
                        stream=sys.stderr)
    # one line per request of our own components is noise, not news
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))


@click.group()
@click.version_option(__version__, prog_name="kyb")
def main() -> None:
    """kybernetes: Kubernetes for machine-learning teams."""


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".kyb"), show_default=True, help="Where state, certificates and "
              "the admin kubeconfig live.")
@click.option("--port", type=int, default=6443, show_default=True, help="HTTPS port.")
@click.option("--bind-address", default="0.0.0.0", show_default=True)
@click.option("--advertise-address", default="", help="Address other nodes and pods use to "
              "reach the API server (default: this host's first IPv4 address).")
@click.option("--fsync/--no-fsync", default=False, show_default=True,
              help="fsync every commit (survives power loss, not only process crashes).")
@click.option("-v", "--verbose", count=True)
def server(data_dir: Path, port: int, bind_address: str, advertise_address: str, fsync: bool,
           verbose: int) -> None:
    """Run the all-in-one control plane."""
    _setup_logging(verbose + 1)
    from kybernetes.cli.serve import run_server

    runner: Callable[..., int]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    code = runner(run_server(data_dir=data_dir.resolve(), port=port, host=bind_address,
                             advertise_address=advertise_address, fsync=fsync))
    sys.exit(code)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


if __name__ == "__main__":  # pragma: no cover
    main()
