"""Run by tests/test_ray_training.py in its own process: a 2-node cluster, a 2-worker TorchTrainer."""
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parent)]


def main(data_dir: Path, tmp: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.training.driver import train_run
    from ray_fixtures import tiny_experiment

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    try:
        cfg = tiny_experiment(data_dir, tmp, scaling={"num_workers": 2})
        outcome = train_run(cfg)
        print(f"num_nodes={outcome.metrics['scaling/num_nodes']} epoch={outcome.metrics['epoch']}")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
