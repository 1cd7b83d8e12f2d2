"""Runs ``dhns-search ARGS`` in a process that the fault tests signal or kill at a known point.

    python tests/killable.py MARKER_DIR [--pause-at EPOCH] -- ARGS...

The real trainer runs, with one extra callback: in the first trial of this process, at the evaluation of
epoch ``--pause-at`` (after the trainer has written its checkpoint), it writes ``MARKER_DIR/paused`` and
waits.  It waits until the stop request that Ctrl-C / SIGTERM makes (then writes ``MARKER_DIR/stopping``
and lets the run reach its next batch, where it stops) or, with ``--hold``, for ever (so that a second
signal, or SIGKILL, finds it there).  Without ``--pause-at`` nothing is added.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("markers", type=Path)
    parser.add_argument("--pause-at", type=int, default=None)
    parser.add_argument("--hold", action="store_true")
    split = sys.argv.index("--")
    ns = parser.parse_args(sys.argv[1:split])
    args = sys.argv[split + 1 :]
    if ns.pause_at is not None:
        _pause_first_trial(ns.markers, ns.pause_at, ns.hold)
    from dhns_search.cli import main as cli

    sys.argv = ["dhns-search", *args]
    cli()


def _pause_first_trial(markers: Path, at: int, hold: bool) -> None:
    from dhns_search.search import trial

    real = trial.train
    state = {"trials": 0}

    def train(cfg, *, dataset=None, callbacks=(), run_dir=None, resume=False, stop=None):
        state["trials"] += 1
        first = state["trials"] == 1

        class Pause:
            def on_epoch_end(self, epoch, stats):
                pass

            def on_evaluation(self, epoch, metrics, history):
                if not first or epoch != at:
                    return
                (markers / "paused").write_text(str(run_dir))
                while stop is None or not stop.is_set():
                    time.sleep(0.05)
                (markers / "stopping").write_text("")
                while hold:
                    time.sleep(0.05)

        return real(cfg, dataset=dataset, callbacks=[*callbacks, Pause()], run_dir=run_dir, resume=resume, stop=stop)

    trial.train = train


if __name__ == "__main__":
    main()
