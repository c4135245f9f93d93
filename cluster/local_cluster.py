"""Start, inspect and stop a real multi-node Ray cluster on this machine (for tests and trying
``pose3d submit``). The logic lives in ``pose3d.infra.local_cluster`` (installed with pose3d); this is
its command line.

    python -m cluster.local_cluster start --dir /tmp/p3d-cluster      # head + 1 worker node
    eval "$(python -m cluster.local_cluster env --dir /tmp/p3d-cluster)"
    pose3d submit -- train --config demo --workers 2 scaling.placement_strategy=STRICT_SPREAD
    python -m cluster.local_cluster stop --dir /tmp/p3d-cluster
"""

from __future__ import annotations

import argparse
import shlex
import sys

from pose3d.infra.local_cluster import ClusterError, LocalCluster


def _print_env(cluster: LocalCluster) -> None:
    env = cluster.env({})
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        print(f"export {key}={shlex.quote(env[key])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.local_cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start a head and worker nodes with `ray start`")
    start.add_argument("--nodes", type=int, default=2, help="nodes including the head (default 2)")
    start.add_argument("--cpus", type=int, default=4, help="logical CPUs per node (default 4)")
    start.add_argument("--object-store-mb", type=int, default=200, help="object store per node, MB")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all nodes")
    sub.add_parser("env", help="print `export` lines that point Ray clients and pose3d at the cluster")
    sub.add_parser("status", help="nodes and processes; exit 1 unless every node is alive")
    stop = sub.add_parser("stop", help="stop exactly the processes this cluster started")
    stop.add_argument("--keep-temp", action="store_true", help="keep the Ray temp dir (logs)")
    for p in sub.choices.values():
        p.add_argument("--dir", required=True, help="the cluster's directory: state, token, logs")
    args = parser.parse_args(argv)

    try:
        if args.action == "start":
            cluster = LocalCluster(args.dir, args.nodes, args.cpus, args.object_store_mb)
            cluster.start(timeout_s=args.timeout)
            print(f"started {args.nodes} nodes")
            print(f"  GCS address: {cluster.address}")
            print(f"  dashboard:   {cluster.dashboard_url}")
            print(f"  token file:  {cluster.token_path}")
            print(f"  Ray temp:    {cluster.state.temp_root}")
            print(f'use it:  eval "$(python -m cluster.local_cluster env --dir {shlex.quote(args.dir)})"')
            return 0
        cluster = LocalCluster.attach(args.dir)
        if args.action == "env":
            _print_env(cluster)
            return 0
        if args.action == "status":
            running = cluster.node_status()
            for name, up in running.items():
                print(f"{name:8s} {'running' if up else 'gone'}")
            alive = cluster.alive_nodes()
            print(f"alive in the GCS: {alive if alive >= 0 else 'dashboard not answering'}")
            print(f"processes: {len(cluster.pids())}")
            return 0 if all(running.values()) and alive == len(running) else 1
        pids = cluster.stop(keep_temp=args.keep_temp)
        print(f"stopped {len(pids)} processes")
        return 0
    except ClusterError as err:
        print(f"local_cluster {args.action}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
