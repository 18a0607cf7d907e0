"""A tagging run's progress, for an operator: bars on a terminal, a log line every N seconds off one.

On a terminal (tqdm, on stderr) one bar counts the files listed and hashed, with their rate, and one
below it the tracks scored, with rate and ETA. The total to score grows with each round of the run
(genretag.tagging.run: each round's scan adds what it found), so the ETA is that of the tracks found so
far. Off a terminal (a service, a pipe, a Prefect worker) a thread logs :meth:`Progress.line` every
``every_s`` seconds (params ``score.progress_every_s``) through the run's logger (Prefect's run logger
in the flow, so the lines reach the Prefect UI): files listed, hashed and unchanged; tracks scored of
the total so far, tagged, failed, rate, ETA; and how long ago anything last
finished, which tells a stalled run (that age grows) from a slow one (the counts move).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tqdm import tqdm


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Counts a run's files and tracks as they are done; bars (``bars``) or log lines every ``every_s`` s.

    Counters are plain ints, advanced from the run's thread (and hashing threads through
    :meth:`hashed`, under a lock); the logging thread only reads them.
    """

    def __init__(self, *, log: logging.Logger | logging.LoggerAdapter, every_s: float, bars: bool):
        self.log, self.every_s, self.bars = log, every_s, bars
        self.started = self.last_change = time.monotonic()
        self.listed = self.hashed_files = self.hashed_bytes = self.unchanged = 0
        self.to_score = self.scored = self.tagged = self.failed = 0
        self.scoring_started: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._scan_bar: Any = None
        self._score_bar: Any = None
        self._thread: threading.Thread | None = None
        if bars:
            self._scan_bar = tqdm(desc="scan", unit=" files", dynamic_ncols=True, leave=True, position=0)
        else:
            self._thread = threading.Thread(target=self._log_every, name="tagging-progress", daemon=True)
            self._thread.start()

    def _log_every(self) -> None:
        while not self._stop.wait(self.every_s):
            self.log.info("%s", self.line())

    def _changed(self) -> None:
        self.last_change = time.monotonic()

    def listed_files(self, count: int, *, unchanged: int) -> None:
        """``count`` more tracks listed, ``unchanged`` of them known by their fingerprint (not read)."""
        self.listed += count
        self.unchanged += unchanged
        self._changed()
        if self._scan_bar is not None:
            self._scan_bar.update(count)
            self._scan_bar.set_postfix_str(self._scan_postfix(), refresh=False)

    def hashed(self, size: int) -> None:
        """One more file hashed, of ``size`` bytes (called from hashing threads)."""
        with self._lock:
            self.hashed_files += 1
            self.hashed_bytes += size
            self._changed()
            if self._scan_bar is not None:
                self._scan_bar.set_postfix_str(self._scan_postfix())

    def start_scoring(self, count: int) -> None:
        """``count`` more tracks to score (a round's), added to the total; the first call starts the scoring
        clock (and bar, below the scan's, which goes on with the next round)."""
        self.to_score += count
        if self.scoring_started is None:
            self.scoring_started = time.monotonic()
            if self._scan_bar is not None:
                self._score_bar = tqdm(total=0, desc="score", unit=" tracks", dynamic_ncols=True, leave=True, position=1)
        self._changed()
        if self._score_bar is not None:
            self._score_bar.total = self.to_score
            self._score_bar.refresh()

    def scored_track(self, *, tagged: bool) -> None:
        self.scored += 1
        self.tagged += tagged
        self.failed += not tagged
        self._changed()
        if self._score_bar is not None:
            self._score_bar.update(1)
            self._score_bar.set_postfix_str(f"{self.tagged} tagged, {self.failed} failed", refresh=False)

    def _scan_postfix(self) -> str:
        return f"{self.hashed_files} hashed ({self.hashed_bytes / 1e6:.0f} MB), {self.unchanged} unchanged"

    def line(self) -> str:
        """One progress line: what is done, the rates, the ETA of scoring, and the age of the last change."""
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        text = (f"progress after {_clock(elapsed)}: {self.listed} tracks listed ({self.listed / elapsed:.0f}/s), "
                f"{self.hashed_files} hashed ({self.hashed_bytes / 1e6:.0f} MB, {self.hashed_bytes / 1e6 / elapsed:.1f} MB/s), "
                f"{self.unchanged} unchanged")
        if self.scoring_started is not None:
            scoring = max(now - self.scoring_started, 1e-9)
            rate = self.scored / scoring
            eta = _clock((self.to_score - self.scored) / rate) if rate > 0 else "unknown"
            text += (f"; scored {self.scored}/{self.to_score} tracks: {self.tagged} tagged, {self.failed} failed, "
                     f"{rate:.2f} tracks/s, ETA {eta}")
        return text + f"; last change {now - self.last_change:.0f} s ago"

    def close(self) -> None:
        """Stop the bars or the logging thread; off a terminal, log the last line."""
        self._stop.set()
        for bar in (self._scan_bar, self._score_bar):
            if bar is not None:
                bar.close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.log.info("%s", self.line())
