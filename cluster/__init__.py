"""Cluster definitions (launcher YAML, KubeRay manifests) and the local multi-node cluster script."""
