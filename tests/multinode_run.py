"""Run by tests/test_ray_training.py in its own process: a 2-node cluster, a 2-worker TorchTrainer; then
a third node that only decodes (data.loader ray_data) for a worker that holds the head's only CPU."""
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parent)]


def main(data_dir: Path, tmp: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.training.driver import train_run
    from ray_fixtures import tiny_experiment

    # the head stands for a GPU node ("trainer"); the others for nodes that only have CPUs
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"trainer": 1}})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    try:
        cfg = tiny_experiment(data_dir, tmp, scaling={"num_workers": 2})
        outcome = train_run(cfg)
        print(f"num_nodes={outcome.metrics['scaling/num_nodes']} epoch={outcome.metrics['epoch']}")

        # data.loader ray_data: the worker holds the head's only CPU, so every clip is decoded elsewhere
        cluster.add_node(num_cpus=2)
        cfg = tiny_experiment(data_dir, tmp, data={"loader": "ray_data"},
                              scaling={"num_workers": 1, "worker_resources": {"trainer": 1}})
        m = train_run(cfg).metrics
        print(f"ray_data: decoded_on_training_node_share={m['data/decoded_on_training_node_share']} "
              f"skipped={m['data/skipped_videos']} {'finished' if 'test/video_top1' in m else 'no test metrics'}")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
