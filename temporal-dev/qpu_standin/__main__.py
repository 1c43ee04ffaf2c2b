"""python -m qpu_standin [--host H] [--port P] [--config FILE] [--db FILE] [--s3-endpoint URL]

Defaults come from QLOOP_STANDIN_HOST (127.0.0.1), QLOOP_STANDIN_PORT (9321),
QLOOP_STANDIN_CONFIG (temporal-dev/qpu-standin.yaml), QLOOP_STANDIN_DB
($QLOOP_STACK_DATA_DIR/qpu-standin.db) and QLOOP_S3_ENDPOINT_URL (http://127.0.0.1:9322).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from qpu_standin.config import DEFAULT_CONFIG, load_settings
from qpu_standin.results import ResultBucket
from qpu_standin.scheduler import Scheduler
from qpu_standin.server import StandinServer
from qpu_standin.service import Service
from qpu_standin.store import TaskStore


def _arguments(argv: list[str]) -> argparse.Namespace:
    env = os.environ
    data_dir = Path(env.get("QLOOP_STACK_DATA_DIR") or DEFAULT_CONFIG.parent / "data")
    parser = argparse.ArgumentParser(prog="qpu_standin", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=env.get("QLOOP_STANDIN_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("QLOOP_STANDIN_PORT", "9321")))
    parser.add_argument("--config", type=Path, default=env.get("QLOOP_STANDIN_CONFIG"))
    parser.add_argument(
        "--db", type=Path, default=Path(env.get("QLOOP_STANDIN_DB") or data_dir / "qpu-standin.db")
    )
    parser.add_argument(
        "--s3-endpoint", default=env.get("QLOOP_S3_ENDPOINT_URL", "http://127.0.0.1:9322")
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=os.environ.get("QLOOP_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    settings = load_settings(args.config)
    bucket = ResultBucket(args.s3_endpoint, settings.region)
    service = Service(settings, TaskStore(args.db), bucket, limits_db=args.db)
    scheduler = Scheduler(service)
    server = StandinServer((args.host, args.port), service)

    def _shutdown(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _shutdown)
    scheduler.start()
    logging.getLogger("qpu_standin").info(
        "QPU stand-in on http://%s:%d (db %s, S3 %s)",
        args.host,
        args.port,
        args.db,
        args.s3_endpoint,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        scheduler.stop()
        server.server_close()
        service.store.close()


if __name__ == "__main__":
    main()
