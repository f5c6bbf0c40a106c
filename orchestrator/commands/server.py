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
                        help="interface to listen on (0.0.0.0: every one, for a cluster's head node); beyond "
                             "loopback the server asks for a login (MLflow's basic auth, needs `pip install "
                             "'mlflow[auth]'`), unless --no-auth")
    parser.add_argument("--no-auth", action="store_true",
                        help="beyond loopback, serve without a login: anyone who reaches the port can read, "
                             "change and delete every run (only on a network no one else reaches); "
                             "`-- --app-name basic-auth` instead uses MLflow's own settings (MLFLOW_AUTH_*)")
    parser.add_argument("--auth-dir", default=None,
                        help="where the login's settings, users and generated admin password are kept "
                             "(default: mlflow-auth beside the SQLite file, else ./mlflow-auth)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=None, help="server worker processes (mlflow's default: 4)")
    parser.add_argument("mlflow_args", nargs=argparse.REMAINDER,
                        help="after --: passed to `mlflow server` as they are, after ours "
                             "(e.g. -- --allowed-hosts head.example.com,head.example.com:5000)")


def run(args: argparse.Namespace) -> int:
    import sys

    from orchestrator import server
    from orchestrator.errors import UserError

    store = server.store_uri(args.backend, args.backend_store_uri)
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    own_app = server.gives(extra, "--app-name")  # e.g. basic-auth with settings of one's own (k8s/mlflow.yaml)
    login = None
    if not (server.is_loopback(args.host) or args.no_auth or own_app):
        try:
            login = server.basic_auth(server.auth_folder(args.auth_dir, store))
        except UserError as err:
            raise UserError(f"--host {args.host} listens beyond this machine, so the server needs a login: "
                            f"{err}") from None
    if not store.startswith("sqlite"):
        server.check_postgres(store)
    server.check_port_free(args.host, args.port)
    artifacts = server.artifact_destination(args.artifact_root, store)
    url = server.tracking_url(args.host, args.port)
    ours = [*(login.args if login else []), *server.network_args(args.host, args.port, given=extra)]
    argv = server.server_command(store=store, artifacts=artifacts, host=args.host, port=args.port,
                                 workers=args.workers, extra=ours + extra)
    if args.no_auth and not server.is_loopback(args.host):
        print(f"warning: --no-auth on {args.host}: anyone who reaches port {args.port} can read, change and delete "
              f"every run, and write files under {artifacts}; keep the port closed to all but your own machines",
              file=sys.stderr, flush=True)
    print(f"MLflow tracking server: store {server.masked(store)}, artifacts in {artifacts}; starting...", flush=True)
    ready = [f"Tracking URI: {url}",
             f"  experiments: `tracking: {{tracking_uri: {url}}}` or --set tracking.tracking_uri={url}"]
    if login:
        ready += [f"  login: user {server.AUTH_USER}, password in {login.password_file} (mode 0600); on every node "
                  "that logs runs (and in the shell that starts Ray there):",
                  f"    export MLFLOW_TRACKING_USERNAME={server.AUTH_USER} "
                  f"MLFLOW_TRACKING_PASSWORD=$(cat {login.password_file})"]
    ready.append("  (Ctrl-C to stop)")
    return server.serve(argv, env=server.NO_GENAI_JOBS, secrets_env=login.env if login else None,
                        health_url=server.local_url(args.host, args.port), ready_message="\n".join(ready))
