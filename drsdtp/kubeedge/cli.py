"""``drsdtp kubeedge``: print the DeviceModel and Device resources of a node's config, for ``kubectl apply``.

Models: every model a twin rule or a ``--device`` names, and every model the config declares
(``--all-models``: the library's too). Devices: each ``--device TWIN=MODEL``, and each twin rule whose
``match`` is a plain id (not a glob). The Devices' node is ``--node-name`` (default: the node id, as the
DaemonSet sets it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from drsdtp.config import load_config
from drsdtp.console import Console
from drsdtp.errors import ConfigError

EXIT_OK: Final = 0
GLOB_CHARS: Final = frozenset("*?[")


def _device(text: str) -> tuple[str, str]:
    twin, sep, model = text.partition("=")
    if not sep or not twin or not model:
        raise argparse.ArgumentTypeError(f"expected TWIN=MODEL, got {text!r}")
    return twin, model


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str) -> None:
    p = sub.add_parser(
        "kubeedge", help="print KubeEdge DeviceModel and Device resources for the config's models and twins"
    )
    p.add_argument("--config", "-c", type=Path, metavar="PATH", help=config_help)
    p.add_argument("--namespace", default="default", help="the resources' namespace (default: %(default)s)")
    p.add_argument("--node-name", help="the KubeEdge edge node serving the devices (default: the node id)")
    p.add_argument(
        "--device", action="append", default=[], type=_device, metavar="TWIN=MODEL", help="a device (repeat)"
    )
    p.add_argument("--all-models", action="store_true", help="include every library model")


def run(args: argparse.Namespace, config_path: Path, console: Console) -> int:
    from drsdtp.kernels import default_registry  # the kernels: only for this command
    from drsdtp.kubeedge.resources import resources, to_yaml
    from drsdtp.models import ModelCatalog

    config = load_config(config_path)
    catalog = ModelCatalog.from_config(config, default_registry())
    devices = [(rule.match, rule.model) for rule in config.twins if not GLOB_CHARS & set(rule.match)]
    devices += list(args.device)
    for i, (_, model) in enumerate(args.device):
        catalog.get(model, f"--device[{i}]")  # an unknown model is named, with a did-you-mean
    wanted = {m for _, m in devices} | {rule.model for rule in config.twins}
    wanted |= {m.name for m in catalog if m.source.startswith(("models[", "models_dir/", "kernels["))}
    models = [m for m in catalog if args.all_models or m.name in wanted]
    if not models:
        raise ConfigError("models", "no model to export: add twin rules, --device TWIN=MODEL or --all-models")
    docs = resources(
        models,
        [(twin, catalog.get(model)) for twin, model in devices],
        node_name=args.node_name or config.node_id,
        node_id=config.node_id,
        namespace=args.namespace,
    )
    console.line(to_yaml(docs).rstrip("\n"))
    return EXIT_OK
