"""`effnet search`: grid search of the compound coefficients (alpha, beta, gamma) at phi = 1."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from effnet.cli import CLIError
from effnet.env import require
from effnet.lab.search import search, shown_url
from effnet.training.trainer import Interrupted


def experiment_kwargs(args: argparse.Namespace) -> dict:
    return {
        "model": args.model,
        "image_size": args.image_size,
        "max_train_samples": args.max_train_samples,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": args.threads,
    }


STORAGE_EXAMPLE = "e.g. sqlite:///runs/search/search.db or postgresql://user@host/db"


def check_storage(url: str) -> None:
    """A one-line CLIError for a --storage URL that cannot work: not a URL, an unknown database
    kind or a driver that is not installed, a sqlite file in a missing or read-only folder, a
    database server that cannot be reached or refuses the login."""
    engine, exc = require("sqlalchemy.engine"), require("sqlalchemy.exc")
    try:
        parsed = engine.make_url(url)
    except exc.ArgumentError:
        raise CLIError(f"--storage {url}: not a database URL ({STORAGE_EXAMPLE})") from None
    url = shown_url(url)
    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()  # the driver module (psycopg, pymysql, ...)
    except exc.NoSuchModuleError:
        raise CLIError(
            f"--storage {url}: unknown database kind {parsed.drivername!r} ({STORAGE_EXAMPLE})"
        ) from None
    except ImportError as e:
        raise CLIError(
            f"--storage {url}: the {parsed.drivername} driver is not installed ({e})"
        ) from None
    if parsed.get_backend_name() != "sqlite":
        connect(parsed, url)
        return
    if parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if path.is_dir():
        raise CLIError(f"--storage {url}: {path} is a folder, not a database file")
    folder = path.parent
    if not folder.is_dir():
        raise CLIError(f"--storage {url}: no such folder {folder} for the sqlite file")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise CLIError(f"--storage {url}: {path if path.exists() else folder} is not writable")


def connect(parsed, url: str) -> None:
    """Open (and close) one connection to a database server: a wrong host, port, password or
    database name is a one-line CLIError before anything is written."""
    sqlalchemy = require("sqlalchemy")
    engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool)
    try:
        engine.connect().close()
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise CLIError(f"--storage {url}: {first_line(e)}") from None
    finally:
        engine.dispose()


def first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


@contextlib.contextmanager
def study_errors(command: str, where: str):
    """Around a study's run: a storage error is one CLIError naming ``where``; Ctrl-C (or a
    SIGTERM the trainer turned into ``Interrupted``) prints one line and puts the exit status
    in the yielded list."""
    stopped: list[int] = []
    lost = (
        require("sqlalchemy.exc").SQLAlchemyError,
        require("optuna.exceptions").StorageInternalError,
    )
    try:
        yield stopped
    except lost as e:  # e.g. a database that refuses, or one lost during the run
        cause = e.__cause__ if e.__cause__ is not None else e
        raise CLIError(f"--storage {shown_url(where)}: {first_line(cause)}") from None
    except (Interrupted, KeyboardInterrupt) as e:
        signal_name = str(e).split(" ")[0] if str(e) else "interrupt"
        print(
            f"effnet {command}: {signal_name} received; finished trials are kept, run the same "
            "command again to continue",
            file=sys.stderr,
        )
        stopped.append(getattr(e, "exit_code", 130))


def run(args: argparse.Namespace) -> int:
    require("optuna")  # before anything is written
    if args.storage is not None:
        check_storage(args.storage)
    where = args.storage or f"sqlite:///{args.out}/search.db"
    with study_errors("search", where) as stopped:
        res = search(
            args.data,
            out=args.out,
            budget=args.budget,
            config=args.config,
            step=args.step,
            max_coef=args.max_coef,
            target=args.target,
            tolerance=args.tolerance,
            max_candidates=args.max_candidates,
            workers=args.workers,
            storage=args.storage,
            seed=args.seed,
            **experiment_kwargs(args),
        )
    if stopped:
        return stopped[0]
    print(
        f"{'rank':<6}{'alpha':>7}{'beta':>7}{'gamma':>7}{'a*b^2*g^2':>11}{'px':>5}"
        f"{'MACs (M)':>10}{'top-1 %':>9}"
    )
    for i, r in enumerate(res["ranking"], 1):
        print(
            f"{i:<6}{r['alpha']:>7.3g}{r['beta']:>7.3g}{r['gamma']:>7.3g}{r['constraint']:>11.3f}"
            f"{r['image_size'] or 0:>5}{(r['macs'] or 0) / 1e6:>10.2f}{r['top1']:>9.2f}"
        )
    b = res["best"]
    if b and (res.get("chance") or {}).get("learned_nothing"):
        print("best: none (every trial at chance, see the warning above); the top row is luck")
    elif b:
        print(
            f"best: alpha {b['alpha']:g}, beta {b['beta']:g}, gamma {b['gamma']:g} "
            f"(top-1 {b['top1']:.2f}%)"
        )
    print(f"ranking: {args.out}/search.json  plot: {res['plot']}")
    return 0
