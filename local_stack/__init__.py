"""Ebb's local stack: a real Kubernetes control plane with KWOK (`cluster`), the stand-in
for AWS (`ec2`: moto with a fault seam) and the bridge that boots its instances into KWOK
nodes (`bridge`), `make run`'s demo (`run`), and what tests and benchmarks drive them with
(`harness`, `aws`, `batch`, `placement`, `extenders`, and the object `builders`).

Neither daemon nor the shared core imports it (.importlinter)."""

from pathlib import Path

# The checkout: manifests/, hack/build-binaries.sh and hack/kwok/ are read from it.
ROOT = Path(__file__).resolve().parent.parent
