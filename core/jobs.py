"""Background jobs: RQ through django-rq, and the one module that hands work to it.

``submit`` never makes its caller wait, whatever the queue's state: it is called right after a
commit, often by a request that is answering a safety engineer (a kill switch). The hand-off
runs in a short-lived daemon thread:

- a real queue (``RQ_QUEUES[queue]`` without ``ASYNC: False``, i.e. ``REDIS_URL`` is set): the
  job is enqueued on Redis with ``rq.Retry`` and an RQ worker runs it. Redis being down or
  unreachable (a connect that hangs) costs that thread, never the caller; the failure is logged.
- the embedded default (no Redis): RQ's ``ASYNC: False`` would run the job inline, inside the
  request, so the thread runs the same job function itself, retrying on the same schedule.
  A job in flight is lost if the process stops (there is no queue to keep it): acceptable for
  the one-process developer set-up, which is what the embedded default is for.

Jobs must take plain JSON-able arguments and must not need the database: what they report is
fixed when they are submitted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings

log = logging.getLogger("fleetflag.jobs")

_threads: set[threading.Thread] = set()
_threads_lock = threading.Lock()


def queue_is_real(queue: str = "default") -> bool:
    """True when jobs go to Redis for RQ workers; False for the embedded in-process default."""
    return bool(settings.RQ_QUEUES[queue].get("ASYNC", True))


def submit(function: Callable[..., Any], *args: Any, retry_intervals: Sequence[int] = (), queue: str = "default",
           job_timeout: int = 60, description: str = "") -> None:
    """Run ``function(*args)`` in the background, retried ``len(retry_intervals)`` times after a
    failure, waiting ``retry_intervals[i]`` seconds before retry ``i + 1``. Returns at once."""
    what = description or getattr(function, "__qualname__", repr(function))
    intervals = [max(0, int(seconds)) for seconds in retry_intervals]
    real = queue_is_real(queue)
    target = _enqueue if real else _run_inline
    thread = threading.Thread(target=_guarded, args=(target, function, args, intervals, queue, job_timeout, what),
                              name=f"job: {what}", daemon=True)
    with _threads_lock:
        _threads.add(thread)
    thread.start()


def wait_idle(timeout: float = 10.0) -> bool:
    """Wait for the hand-offs of this process to finish (tests, and a clean shutdown)."""
    deadline = time.monotonic() + timeout
    while True:
        with _threads_lock:
            running = [thread for thread in _threads if thread.is_alive()]
        if not running:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        running[0].join(min(remaining, 0.1))


def _guarded(target: Callable[..., None], *arguments: Any) -> None:
    try:
        target(*arguments)
    except Exception:  # a background hand-off logs; it never raises into anything
        log.exception("job %s: not handed off", arguments[-1])
    finally:
        with _threads_lock:
            _threads.discard(threading.current_thread())


def _enqueue(function: Callable[..., Any], args: tuple[Any, ...], intervals: list[int], queue: str,
             job_timeout: int, what: str) -> None:
    import django_rq
    from rq import Retry

    retry = Retry(max=len(intervals), interval=intervals) if intervals else None
    # commit_mode "auto": the caller has committed already (django-rq would otherwise wait
    # for a commit of its own, which in a thread never comes).
    job = django_rq.get_queue(queue, commit_mode="auto").enqueue(
        function, *args, retry=retry, job_timeout=job_timeout, description=what)
    log.info("job %s: enqueued as %s on %s", what, job.id, queue)


def _run_inline(function: Callable[..., Any], args: tuple[Any, ...], intervals: list[int], queue: str,
                job_timeout: int, what: str) -> None:
    for attempt in range(len(intervals) + 1):
        try:
            function(*args)
            return
        except Exception as exc:  # noqa: BLE001 - retried on the schedule, then logged as given up
            if attempt == len(intervals):
                log.error("job %s: failed after %d attempts, giving up (%s)", what, attempt + 1, exc)
                return
            log.warning("job %s: attempt %d failed (%s); retry in %d s", what, attempt + 1, exc, intervals[attempt])
            time.sleep(intervals[attempt])
