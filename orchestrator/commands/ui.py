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


MAX_LINKS = 10  # experiments listed with their link, latest run first


def _prepare_experiments(tracking_uri: str, ui_url: str) -> list[str]:
    """Mark KILLED the runs left RUNNING by killed drivers (they would look alive in the UI), tag
    the experiments that have runs as model training, and return one line per such experiment with
    the link to its runs in the Model-training view (latest run first)."""
    import mlflow

    from orchestrator.tracking import mark_model_training, reap_stale_runs, ui_link

    client = mlflow.MlflowClient(tracking_uri)
    latest = []
    for experiment in client.search_experiments():
        reap_stale_runs(tracking_uri, experiment.name)
        runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
        if runs:  # MLflow's empty 'Default' has nothing to see
            mark_model_training(client, experiment)
            latest.append((runs[0].info.start_time, experiment.name))
    return [f"  {name}: {ui_link(tracking_uri, name, ui_url=ui_url)}"
            for _, name in sorted(latest, reverse=True)[:MAX_LINKS]]


def run(args: argparse.Namespace) -> int:
    from orchestrator.config import resolve_tracking_uri
    from orchestrator.server import NO_GENAI_JOBS, serve
    from orchestrator.tracking import hide_password

    uri = resolve_tracking_uri(args.tracking_uri)
    ui_url = f"http://127.0.0.1:{args.port}"
    links = _prepare_experiments(uri, ui_url)
    print(f"MLflow UI for {hide_password(uri)} at {ui_url}  (Ctrl-C to stop)", flush=True)
    print("\n".join(["Runs of each experiment:", *links] if links else ["No runs yet."]), flush=True)
    return serve(ui_command(uri, args.port), env=NO_GENAI_JOBS)  # its own process group, stopped by Ctrl-C or SIGTERM
