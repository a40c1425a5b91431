"""The terminal of a long `ifdd` command (search, demo, train): a quiet console, everything else in a log file.

The terminal gets the command's own lines (header, tables, hints, ``warning:``/``error:``), one live progress line
per study (``ProgressLine``; orchestrator/search/progress.py feeds it), and the warnings and errors of Ray's workers.
The log file ``<runs>/logs/<command>-<time>.log``, whose path is printed first, gets all of that plus what a
newcomer does not need to see: the workers' other output (epoch lines, Ray Train's worker-group banners, the
placement-group cleaner, raylet notes), Ray's/MLflow's/Optuna's INFO logging, and what Tune prints to stdout (its
configuration box, the results folder and the TensorBoard hint). ``--verbose`` puts the log file's lines on the
terminal too.

How the pieces are caught:

- workers: Ray's driver relays every worker line through one dispatcher; ``attach_ray`` swaps Ray's printer for
  ``_route_batch`` (Ray's own printer also merges look-alike lines of different trials, "[repeated 3x across
  cluster]", which would hide epoch lines);
- loggers: the stream handlers of the ``ray``/``mlflow``/``alembic``/``optuna`` loggers are raised to WARNING and a
  file handler takes their INFO records; MLflow's ``eprint`` notes ("Created version '1' of model …") go to the
  file;
- Tune's prints: ``tune_output`` sends stdout to the file while a Tuner runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOGGERS = ("ray", "mlflow", "alembic", "optuna")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOTEWORTHY = re.compile(r"\b(warning|warn|error|errors|exception|traceback|fatal|critical)\b|\w+(Warning|Error):",
                        re.IGNORECASE)
"""A worker line the terminal shows: a warning or an error as Python, Ray or our own code writes one."""
BENIGN = ("PYTHON worker processes have been started",)
"""Raylet notes that are expected by design and go to the log file only: each trial's driver reserves a fraction of a
CPU (orchestrator/planner.py), so Ray starts more worker processes than CPUs and says so once per study."""

_current: Console | None = None


def current() -> Console | None:
    """The console of the running command, if it has one (tests that call the runner directly have none)."""
    return _current


class _LogFile:
    """The command's log file: whole lines, from any thread."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by Console.close
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if not self._f.closed:
                self._f.write(ANSI.sub("", text))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()


class _Tee(io.TextIOBase):
    """A sys.stdout/sys.stderr stand-in: complete lines to the log file and (unless ``to_terminal`` is off) to the
    terminal, clearing and redrawing a live progress line around them."""

    def __init__(self, console: Console, terminal, *, err: bool):
        self.console, self.terminal, self.err = console, terminal, err
        self.to_terminal = True
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.console.log.write(line + "\n")
            if self.to_terminal:
                self.console.say(line, err=self.err)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    @property
    def encoding(self):
        return getattr(self.terminal, "encoding", "utf-8")

    def drain(self) -> None:
        if self._partial:
            self.write("\n")


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class Console:
    """One command's console. ``Console.open`` makes it current; ``close`` undoes every change it made."""

    def __init__(self, log_path: Path, *, verbose: bool):
        self.verbose = verbose
        self.log = _LogFile(log_path)
        self.term_out, self.term_err = sys.stdout, sys.stderr
        self._stdout, self._stderr = _Tee(self, self.term_out, err=False), _Tee(self, self.term_err, err=True)
        self._file_handler = logging.StreamHandler(self.log)
        self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._file_handler.addFilter(_BelowWarning())  # WARNING and up reach the file through the terminal tee
        self._levels: dict[logging.StreamHandler, tuple] = {}
        """handler -> (level, stream) before this console routed it."""
        self._ray_handlers = None
        self._mlflow_stream = None
        self._continuing: dict[tuple, bool] = {}
        self.line_listeners: list[Callable[[str], None]] = []
        self.bars: list = []
        self._lock = threading.RLock()

    @classmethod
    def open(cls, command: str, logs_dir: Path, *, verbose: bool = False) -> Console:
        global _current
        if _current is not None:
            _current.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = logs_dir / f"{command}-{stamp}.log"
        n = 1
        while path.exists():  # two commands started in the same second
            n += 1
            path = logs_dir / f"{command}-{stamp}-{n}.log"
        console = cls(path, verbose=verbose)
        console.term_out.write(f"log: {path} (Ray, worker and library output{'; also shown here' if verbose else ''})"
                               "\n")
        console.term_out.flush()
        console.route_loggers()
        sys.stdout, sys.stderr = console._stdout, console._stderr
        _current = console
        return console

    @property
    def path(self) -> Path:
        return self.log.path

    # terminal ---------------------------------------------------------------------------------------------------
    def say(self, line: str, *, err: bool = False) -> None:
        """One line on the terminal, without tearing a live progress line."""
        stream = self.term_err if err else self.term_out
        with self._lock:
            if self.bars:
                from tqdm import tqdm

                tqdm.write(line, file=stream)
            else:
                stream.write(line + "\n")
                stream.flush()

    # Python logging ---------------------------------------------------------------------------------------------
    def route_loggers(self) -> None:
        """INFO records of Ray, MLflow, Alembic and Optuna to the file, WARNING and up to the terminal as well.
        Idempotent: ``ray.init`` and ``import mlflow`` (re)configure their loggers, so this runs again after them.
        With ``--verbose`` nothing changes: every record reaches the terminal, and the file through the tee."""
        if self.verbose:
            return
        import ray  # noqa: F401 - gives the "ray" logger its handler on import: route it now, before ray.init logs

        mlflow_stream = getattr(sys.modules.get("mlflow.utils.logging_utils"), "MlflowLoggingStream", ())
        for name in LOGGERS:
            logger = logging.getLogger(name)
            for h in logger.handlers:
                if h is self._file_handler or not isinstance(h, logging.StreamHandler) or h in self._levels:
                    continue
                to_terminal = _fileno(h.stream) in (1, 2)  # the stream it took at import: the bare terminal
                if not (to_terminal or isinstance(h.stream, mlflow_stream)):  # MLflow's writes to sys.stderr
                    continue  # someone else's handler (a file, a test harness): not ours to change
                self._levels[h] = (h.level, h.stream)
                if to_terminal:  # through the tee: into the log as well, and clear of a live progress line
                    h.setStream(self._stderr)
                h.setLevel(max(h.level, logging.WARNING))
            if self._file_handler not in logger.handlers and (logger.handlers or not logger.propagate):
                logger.addHandler(self._file_handler)
        mlflow_logging = sys.modules.get("mlflow.utils.logging_utils")  # imported by the commands that use MLflow
        if mlflow_logging is not None and self._mlflow_stream is None:  # eprint() looks it up at each call
            self._mlflow_stream = mlflow_logging.MLFLOW_LOGGING_STREAM
            mlflow_logging.MLFLOW_LOGGING_STREAM = self.log

    # Ray's worker relay -----------------------------------------------------------------------------------------
    def attach_ray(self) -> None:
        """Route the lines Ray relays from its workers through this console (idempotent; after ``ray.init``)."""
        import ray

        self.route_loggers()
        if self._ray_handlers is not None or not ray.is_initialized():
            return
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:  # Ray moved it: its own printer stays, and so does the noise
            self.log.write("console: Ray's log dispatcher not found; worker output is printed by Ray\n")
            return
        with dispatcher._lock:
            self._ray_handlers = list(dispatcher.handlers)
            dispatcher.handlers = [(n, h) for n, h in dispatcher.handlers if n != "ray_print_logs"]
            dispatcher.handlers.append(("ifdd_console", self._route_batch))

    def _route_batch(self, data: dict) -> None:
        pid = data.get("pid")
        name = data.get("actor_name") or data.get("task_name") or ""
        where = "" if data.get("ip") in (None, data.get("localhost")) else f", ip={data.get('ip')}"
        prefix = f"({pid}{where})" if pid in ("raylet", "autoscaler") else f"({name} pid={pid}{where})".replace(
            "( ", "(")
        key = (pid, bool(data.get("is_err")))
        lines = data.get("lines", [])
        if pid == "autoscaler":  # its status table every 5 s is not news; its events are (Ray prints only those)
            from ray._private.worker import filter_autoscaler_events

            lines = list(filter_autoscaler_events(lines))
        for line in lines:
            self.log.write(f"{prefix} {line}\n")
            for listen in self.line_listeners:
                listen(line)
            if self.verbose or self._noteworthy(key, line):
                self.say(f"{prefix} {line}", err=True)

    def _noteworthy(self, key: tuple, line: str) -> bool:
        """A warning or error line, and the indented lines that continue it (a warning's source line, a
        traceback's frames)."""
        if any(b in line for b in BENIGN):
            self._continuing[key] = False
            return False
        if NOTEWORTHY.search(line):
            self._continuing[key] = True
            return True
        if self._continuing.get(key) and line[:1].isspace():
            return True
        self._continuing[key] = False
        return False

    # Tune -------------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def tune_output(self) -> Iterator[None]:
        """While a Tuner runs: its stdout prints (configuration box, results folder, TensorBoard hint) to the
        file only; stderr (warnings, errors) stays on the terminal."""
        self.attach_ray()
        self._stdout.to_terminal = self.verbose
        try:
            yield
        finally:
            self._stdout.drain()
            self._stdout.to_terminal = True

    # end --------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        global _current
        for bar in list(self.bars):
            bar.close()
        self._stdout.drain()
        self._stderr.drain()
        if sys.stdout is self._stdout:
            sys.stdout = self.term_out
        if sys.stderr is self._stderr:
            sys.stderr = self.term_err
        for h, (level, stream) in self._levels.items():
            h.setLevel(level)
            if h.stream is self._stderr:
                h.setStream(stream)
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self._file_handler)
        if self._mlflow_stream is not None:
            import mlflow.utils.logging_utils as mlflow_logging

            mlflow_logging.MLFLOW_LOGGING_STREAM = self._mlflow_stream
        if self._ray_handlers is not None:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

            with dispatcher._lock:
                dispatcher.handlers = [(n, h) for n, h in dispatcher.handlers if n != "ifdd_console"] + [
                    (n, h) for n, h in self._ray_handlers if n == "ray_print_logs"]
        self.log.close()
        if _current is self:
            _current = None


@contextlib.contextmanager
def console_session(command: str, logs_dir: Path, *, verbose: bool = False) -> Iterator[Console]:
    """The console of one command (``logs_dir``: ``Outputs.logs_dir``)."""
    console = Console.open(command, logs_dir, verbose=verbose)
    try:
        yield console
    finally:
        console.close()


def tune_output() -> contextlib.AbstractContextManager:
    """The current console's ``tune_output``, or nothing to do without a console."""
    return _current.tune_output() if _current is not None else contextlib.nullcontext()


class ProgressLine:
    """One live status line: redrawn in place on a terminal (tqdm), printed as a plain line elsewhere (a CI log, a
    pipe) when it changes meaningfully or once a minute."""

    HEARTBEAT_S = 60.0
    MINOR_S = 20.0
    REDRAW_S = 1.0

    def __init__(self, console: Console, total: int):
        self.console = console
        self.tty = _columns(console.term_err) > 0  # a pty of width 0 (some CI runners) would show nothing
        self._last_plain, self._last_draw, self._text = time.monotonic(), 0.0, ""
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=console.term_err, bar_format="{bar:10} {desc}", dynamic_ncols=True,
                            leave=True)
            console.bars.append(self.bar)

    def update(self, text: str, done: int, *, changed: bool, major: bool) -> None:
        """``changed``: something moved (an epoch finished); ``major``: a trial started or ended, or the best moved.
        A plain line is printed on a major change, on a minor one at most every MINOR_S, and once a minute."""
        now = time.monotonic()
        if changed:
            self.console.log.write(f"progress: {text}\n")
        if self.bar is not None:
            if changed or now - self._last_draw >= self.REDRAW_S:
                with self.console._lock:
                    self.bar.n = done
                    self.bar.set_description_str(text, refresh=False)
                    self.bar.refresh()
                self._last_draw = now
        elif major or (changed and now - self._last_plain >= self.MINOR_S) or \
                now - self._last_plain >= self.HEARTBEAT_S:
            self.console.say(text, err=True)
            self._last_plain, self._text = now, text

    def close(self, text: str, done: int) -> None:
        """The final state, left on the terminal."""
        if self.bar is not None:
            with self.console._lock:
                self.bar.n = done
                self.bar.set_description_str(text, refresh=False)
                self.bar.close()
                self.console.bars.remove(self.bar)
            self.bar = None
        elif text != self._text:
            self.console.say(text, err=True)
        self.console.log.write(f"progress: {text}\n")


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _columns(stream) -> int:
    """The width of the terminal ``stream`` writes to; 0 when it is not a terminal."""
    import os

    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (AttributeError, OSError, ValueError):
        return 0


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``42s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


EPOCH_LINE = re.compile(r"^(?P<label>\S+) epoch (?P<epoch>\d+)/(?P<epochs>\d+) fold (?P<fold>\d+): train_loss "
                        r"(?P<train_loss>\S+) (?P<metric>\w+) (?P<value>\S+) \(best (?P<best>\S+) @ (?P<best_epoch>\d+)"
                        r"\)")


def epoch_line(label: str, epoch: int, epochs: int, fold: int, metrics: dict, select: str, best_value: float,
               best_epoch: int, shown: str | None = None) -> str:
    """The line a training run's rank 0 prints after each epoch (``parse_epoch_line`` reads it back). ``shown``: the
    name printed for ``select`` (orchestrator/protocol.py ``metric_name``: ``test_uar`` under paper parity)."""
    return (f"{label} epoch {epoch}/{epochs} fold {fold}: train_loss {metrics['train_loss']:.4f} {shown or select} "
            f"{metrics[select]:.4f} (best {best_value:.4f} @ {best_epoch}) lr {metrics['lr']:.2e} "
            f"{metrics['clips_per_s']:.1f} clips/s")


def parse_epoch_line(line: str) -> dict | None:
    m = EPOCH_LINE.match(line.strip())
    if not m:
        return None
    d = m.groupdict()
    return {"label": d["label"], "epoch": int(d["epoch"]), "epochs": int(d["epochs"]), "fold": int(d["fold"]),
            "metric": d["metric"], "value": float(d["value"]), "best": float(d["best"]),
            "best_epoch": int(d["best_epoch"])}
