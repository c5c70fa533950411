"""Starting the service: the server (uvicorn) and its job workers, and the demo project."""

from __future__ import annotations

import signal

from custseg.web.config import WebSettings

__all__ = ["serve", "work"]


def serve(settings: WebSettings, *, host: str, port: int, demo: bool, uvicorn) -> None:
    """Migrate the store, mark interrupted the runs whose worker died, (make the demo project,)
    start the workers and serve until stopped."""
    from custseg.web.app import create_app

    app = create_app(settings)
    from custseg.web import jobs

    marked = jobs.mark_stale(settings, app.state.store)
    if marked:
        print(f"runs {', '.join(map(str, marked))} were interrupted (their worker stopped): retry them")
    if demo:
        from custseg.web.services import demo as demo_service

        with app.state.store.session() as db:
            print(demo_service.ensure_demo(db, settings))
    # uvicorn raises the signal that stopped it again once it has shut down: SIGTERM then
    # leaves through this function (SystemExit), so the workers are stopped below.
    signal.signal(signal.SIGTERM, _exit)
    workers = _start_workers(settings)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=settings.access_log)
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(timeout=30)


def _exit(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _start_workers(settings: WebSettings) -> list:
    """``settings.workers`` processes of ``custseg worker`` beside the server."""
    if not settings.workers:
        return []
    from custseg.web import jobs

    return jobs.start_workers(settings)


def work(settings: WebSettings, *, processes: int = 1) -> None:
    """Run jobs in this process until stopped."""
    from custseg.web import jobs

    jobs.work(settings, processes=processes)
