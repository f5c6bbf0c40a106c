"""`actionlab ui`: the MLflow UI on this machine, over the same store the runs were logged to."""
import argparse
import sys

HELP = "Browse runs, metrics and artifacts in the MLflow UI (local only: 127.0.0.1)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///mlflow.db)")
    parser.add_argument("--port", type=int, default=5000)


def ui_command(tracking_uri: str, port: int) -> list[str]:
    """The `mlflow ui` command line, run with this interpreter so the venv's mlflow serves it.

    Bound to 127.0.0.1: the UI has no authentication (use an SSH tunnel from elsewhere).
    """
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", "127.0.0.1", "--port", str(port)]


def _reap_all(tracking_uri: str) -> None:
    """Runs left RUNNING by killed drivers would look alive in the UI: mark them KILLED first."""
    import mlflow

    from orchestrator.tracking import reap_stale_runs

    for experiment in mlflow.MlflowClient(tracking_uri).search_experiments():
        reap_stale_runs(tracking_uri, experiment.name)


def run(args: argparse.Namespace) -> int:
    from orchestrator.config import resolve_tracking_uri
    from orchestrator.server import NO_GENAI_JOBS, serve

    uri = resolve_tracking_uri(args.tracking_uri)
    _reap_all(uri)
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}  (Ctrl-C to stop)", flush=True)
    return serve(ui_command(uri, args.port), env=NO_GENAI_JOBS)  # its own process group, stopped by Ctrl-C or SIGTERM
