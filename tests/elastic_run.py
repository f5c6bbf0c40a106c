"""Run by tests/test_ray_training.py in its own process: an elastic run (`num_workers: [1, 2]`) on a
simulated cluster of two one-CPU nodes, put through a node loss without notice, a node's return and a
spot preemption with notice (a drain through Ray's API), timed against its MLflow run. Prints one
`key=value` line per measurement and the run's `train/world_size` curve."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parent)]

NOTICE_S = 10  # the drain's deadline: GKE gives ~30 s, AWS 120 s


def main(data_dir: Path, tmp: Path, epochs: int) -> None:
    import mlflow
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.training.driver import train_run
    from ray_fixtures import tiny_experiment

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node trains nothing
    nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
    ray.init(address=cluster.address)
    cfg = tiny_experiment(data_dir, tmp, data={"val": None}, optim={"epochs": epochs, "batch_size": 1},
                          scaling={"num_workers": [1, 2], "resize_interval_s": 5, "checkpoint_every_steps": 4,
                                   "max_failures": 1, "max_preemption_failures": 1},
                          tracking={"system_metrics_interval_s": 0})
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(result=train_run(cfg)), daemon=True)
    run.start()
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)

    def curve() -> list:
        runs = client.search_runs([client.get_experiment_by_name(cfg.experiment_name).experiment_id])
        if not runs:
            return []
        return sorted((m.step, int(m.value)) for m in client.get_metric_history(runs[0].info.run_id,
                                                                                "train/world_size"))

    def wait_for(world: int, after_step: int, what: str, timeout_s: float = 240) -> tuple[float, int]:
        """Seconds until a step after `after_step` is logged at world size `world`; that step."""
        start = time.time()
        while time.time() - start < timeout_s:
            try:
                points = curve()
            except Exception:  # noqa: BLE001 - the store is being created
                points = []
            hit = [step for step, w in points if step > after_step and w == world]
            if hit:
                return time.time() - start, hit[0]
            if not run.is_alive():
                break
            time.sleep(0.2)
        raise SystemExit(f"{what}: no step at world size {world} after step {after_step}: {curve()}")

    def lost() -> float:
        runs = client.search_runs([client.get_experiment_by_name(cfg.experiment_name).experiment_id])
        return max((m.value for m in client.get_metric_history(runs[0].info.run_id, "train/lost_steps")), default=0)

    _, step = wait_for(2, 0, "start")
    cluster.remove_node(nodes[1])  # no notice: the node is gone
    seconds, step = wait_for(1, step, "node loss")
    print(f"elastic: node_loss_to_training_s={seconds:.1f}", flush=True)
    print(f"elastic: lost_steps_without_notice={lost():.0f}", flush=True)
    nodes[1] = cluster.add_node(num_cpus=1)
    seconds, step = wait_for(2, step, "node return")
    print(f"elastic: node_return_to_world_2_s={seconds:.1f}", flush=True)
    before = lost()
    node_id = nodes[1].node_id
    notice = time.time()
    ray_cli = str(Path(sys.executable).with_name("ray"))  # Ray's drain API, as a reclaimed node's `ray start` calls it
    subprocess.run([ray_cli, "drain-node", "--address", cluster.address, "--node-id", node_id,
                    "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim (simulated)",
                    "--deadline-remaining-seconds", str(NOTICE_S)], check=True)
    time.sleep(max(0.0, notice + NOTICE_S - time.time()))
    cluster.remove_node(nodes[1], allow_graceful=False)  # the reclaim, at the deadline: the machine is gone
    seconds, step = wait_for(1, step, "preemption")
    print(f"elastic: preemption_notice_to_training_s={time.time() - notice:.1f}", flush=True)
    print(f"elastic: lost_steps_with_notice={lost() - before:.0f}", flush=True)
    run.join(timeout=600)
    result = outcome["result"]
    status = client.get_run(result.run_id).info.status
    epochs_logged = [m.step for m in client.get_metric_history(result.run_id, "train/loss")]
    print(f"elastic: status={status}", flush=True)
    print(f"elastic: epochs_logged={json.dumps(sorted(epochs_logged), separators=(',', ':'))}", flush=True)
    print(f"elastic: resumed_from_step={result.metrics.get('resumed_from_step')}", flush=True)
    print(f"elastic: world_size_curve={json.dumps(curve(), separators=(',', ':'))}", flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
