"""`actionlab server`: an MLflow tracking server (PostgreSQL store, proxied artifacts) for a cluster's runs."""
import argparse

HELP = ("Start an MLflow tracking server on PostgreSQL (or SQLite on a laptop) and print the "
        "tracking URI to give experiments.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orchestrator.server import BACKENDS, DEFAULT_POSTGRES_URI

    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="postgresql (default: many concurrent writers) or sqlite (one file; a laptop)")
    parser.add_argument("--backend-store-uri", default=None,
                        help=f"postgresql://user[:password]@host:port/database or sqlite:///file.db "
                             f"(default: {DEFAULT_POSTGRES_URI}, or sqlite:///mlflow.db with --backend sqlite)")
    parser.add_argument("--artifact-root", default=None,
                        help="folder or shared mount (e.g. /mnt/shared/mlartifacts), or s3://bucket/prefix "
                             "(passed through); default: mlartifacts beside the SQLite file, else ./mlartifacts")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (0.0.0.0: every one, for a cluster's head node; the "
                             "server has no authentication: keep the port closed to the internet)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=None, help="server worker processes (mlflow's default: 4)")
    parser.add_argument("mlflow_args", nargs=argparse.REMAINDER,
                        help="after --: passed to `mlflow server` as they are "
                             "(e.g. -- --allowed-hosts head.example.com)")


def run(args: argparse.Namespace) -> int:
    from orchestrator import server

    store = server.store_uri(args.backend, args.backend_store_uri)
    if not store.startswith("sqlite"):
        server.check_postgres(store)
    server.check_port_free(args.host, args.port)
    artifacts = server.artifact_destination(args.artifact_root, store)
    url = server.tracking_url(args.host, args.port)
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    argv = server.server_command(store=store, artifacts=artifacts, host=args.host, port=args.port,
                                 workers=args.workers, extra=extra)
    print(f"MLflow tracking server: store {server.masked(store)}, artifacts in {artifacts}; starting...", flush=True)
    ready = (f"Tracking URI: {url}\n"
             f"  experiments: `tracking: {{tracking_uri: {url}}}` or --set tracking.tracking_uri={url}\n"
             f"  (Ctrl-C to stop)")
    return server.serve(argv, env=server.NO_GENAI_JOBS, health_url=server.local_url(args.host, args.port),
                        ready_message=ready)
