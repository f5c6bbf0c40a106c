"""`actionlab schema`: the experiment file's JSON schema, for editors that validate YAML."""
import argparse

HELP = "Print the JSON schema of experiment files (e.g. actionlab schema > experiment.schema.json)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import json

    from orchestrator.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0
